"""What both launchers do with a job its scheduler lost: record it and let the multirun go on."""
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf, open_dict

from pgpong.tracking.multirun import write_job_status


def job_dir(hydra_context, master_config, overrides, num: int) -> Path:
    """The output folder Hydra gives job `num`: the sweep dir and the job's resolved subdir."""
    cfg = hydra_context.config_loader.load_sweep_config(master_config, list(overrides))
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.num = num
    subdir = OmegaConf.select(cfg, "hydra.sweep.subdir", default=str(num))
    return Path(str(master_config.hydra.sweep.dir)).resolve() / str(subdir)


def lost_job(folder: Path, overrides, reason: str) -> JobReturn:
    """The job's status file says FAILED and why; the sweep continues (the return is not an error)."""
    write_job_status(folder, "FAILED", reason)
    print(f"pgpong: job {folder.name} ({' '.join(overrides)}) FAILED: {reason}", flush=True)
    return JobReturn(overrides=list(overrides), working_dir=str(folder), status=JobStatus.COMPLETED,
                     _return_value=None)
