"""hydra/launcher=slurm: hydra-submitit-launcher's Slurm launcher, waiting for every job.

The jobs are one Slurm job array submitted by submitit, each running the Hydra app in the same
way as hydra-submitit-launcher (its `__call__` and `checkpoint` hook are inherited: a job that
reaches its time limit or is preempted is requeued and resumes from its checkpoint). What this
class changes is the wait: a job that ends without a result (cancelled, killed at its time limit
with no requeue left, node failure) is recorded FAILED with Slurm's state, and the launcher
goes on waiting for the others instead of raising at the first lost job.
"""
import logging
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from hydra_plugins.pgpong_launchers.jobs import job_dir, lost_job

log = logging.getLogger(__name__)
EXECUTOR_INIT_KEYS = ("submitit_folder", "max_num_timeout")


class SlurmLauncher(SubmititSlurmLauncher):

    def executor(self):
        """A submitit Slurm executor with this launcher's keys (Slurm-only keys get submitit's slurm_ prefix)."""
        import submitit
        executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster="slurm",
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        common = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in common else f"slurm_{k}": v for k, v in self.params.items()
                                      if k not in EXECUTOR_INIT_KEYS})
        return executor

    def launch(self, job_overrides, initial_job_idx: int):
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        nums = [initial_job_idx + i for i in range(len(job_overrides))]
        args = [(list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state())
                for n, o in zip(nums, job_overrides)]
        jobs = self.executor().map_array(self, *zip(*args))
        for n, o, job in zip(nums, job_overrides, jobs):
            log.info(f"\t#{n} : Slurm job {job.job_id} : {' '.join(o)}")
        returns = []
        for n, o, job in zip(nums, job_overrides, jobs):
            try:
                returns.append(job.results()[0])
            except Exception as e:    # the job ended without a result: say what Slurm says
                reason = f"Slurm job {job.job_id} ended {job.state}"
                if job.state in ("UNKNOWN", "COMPLETED"):    # Slurm does not know why: say what submitit saw
                    reason += f" ({type(e).__name__}: {str(e).strip().splitlines()[0][:500] if str(e).strip() else ''})"
                returns.append(lost_job(job_dir(self.hydra_context, self.config, o, n), o, reason))
        return returns
