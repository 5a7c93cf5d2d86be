"""hydra/launcher=ray: every job of a multirun as a Ray task on a running Ray cluster.

Each task reserves `num_cpus` CPUs and runs the Hydra app in a Ray worker process; its emulator
threads follow the reservation (PGPONG_JOB_CPUS). The sweep folder is made absolute before the
jobs leave, so their outputs land where the launching process counts them whatever the worker's
working directory. Ray reruns a task whose worker or node died up to `max_retries` times (the
rerun resumes from the job's checkpoint); a task that still ends without a result is recorded
FAILED with Ray's error, and the launcher goes on waiting for the others.
"""
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf, open_dict

from hydra_plugins.pgpong_launchers.jobs import lost_job
from pgpong.cluster import CPUS_ENV, RAY_TASK_ENV

log = logging.getLogger(__name__)


def run_in_worker(hydra_context, sweep_config, task_function, singleton_state, num_cpus: int):
    """The job, inside a Ray worker process: Hydra's globals restored, then Hydra's run_job."""
    import ray
    os.environ[CPUS_ENV] = str(num_cpus)
    os.environ[RAY_TASK_ENV] = ray.get_runtime_context().get_task_id()
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


class RayLauncher(Launcher):

    def __init__(self, address=None, num_cpus: int = 2, max_retries: int = 1, init=None) -> None:
        self.address, self.num_cpus, self.max_retries = address, int(num_cpus), int(max_retries)
        self.init = OmegaConf.to_container(init, resolve=True) if OmegaConf.is_config(init) else dict(init or {})
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides, initial_job_idx: int):
        import ray
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        connected_here = not ray.is_initialized()
        if connected_here:
            ray.init(address=self.address, **self.init)
        task = ray.remote(num_cpus=self.num_cpus, max_retries=self.max_retries)(run_in_worker)
        jobs = []
        for i, overrides in enumerate(job_overrides):
            num = initial_job_idx + i
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = f"job_id_for_{num}"
                cfg.hydra.job.num = num
                cfg.hydra.sweep.dir = str(sweep_dir)
            ref = task.remote(self.hydra_context, cfg, self.task_function, Singleton.get_state(), self.num_cpus)
            folder = sweep_dir / str(OmegaConf.select(cfg, "hydra.sweep.subdir", default=num))
            jobs.append((ref, overrides, folder))
            log.info(f"\t#{num} : Ray task {ref.task_id().hex()} : {' '.join(overrides)}")
        returns = []
        try:
            for ref, overrides, folder in jobs:
                try:
                    returns.append(ray.get(ref))
                except ray.exceptions.RayError as e:    # worker or node died, task cancelled, ...
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    reason = f"Ray task {ref.task_id().hex()} ended without a result: {type(e).__name__}: {first[:500]}"
                    returns.append(lost_job(folder, overrides, reason))
        finally:
            if connected_here:
                ray.shutdown()
        return returns
