"""A run as a cluster scheduler's job (Slurm, Ray): the CPUs it was granted, who stops it, reruns.

A job learns its CPUs from the scheduler: Slurm sets SLURM_CPUS_PER_TASK from --cpus-per-task,
pgpong's Ray launcher sets PGPONG_JOB_CPUS to the task's `num_cpus`. The job's emulator threads
are one per CPU in all, shared among its groups (at most one per emulator).

A rerun of a multirun job (Slurm requeue after a time limit, preemption or `scontrol requeue`;
a Ray retry after its worker or node died) gets the same output folder as the first attempt: the
newest checkpoint there is where it continues, instead of starting over.

A job its scheduler stopped, or whose node died, is FAILED in MLflow with the reason the launcher
saw (pgpong/tracking/lost_jobs.py).
"""
import os
from pathlib import Path

CPUS_ENV = "PGPONG_JOB_CPUS"
RAY_TASK_ENV = "PGPONG_RAY_TASK"


def granted_cpus() -> int | None:
    """CPUs the scheduler reserved for this job, or None outside a scheduler's job."""
    for var in (CPUS_ENV, "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def threads_per_group(cpus: int, env_cfg) -> int:
    """Emulator threads per vector env when `cpus` CPUs are shared among env.groups (a thread per
    CPU in all): at least 1, at most a group's emulators."""
    groups = max(1, env_cfg.groups)
    return max(1, min(cpus // groups, env_cfg.num_envs // groups))


def job_threads(env_cfg) -> int | None:
    """Emulator threads per group for a scheduler's job: its granted CPUs shared among the groups; else None."""
    cpus = granted_cpus()
    return None if cpus is None else threads_per_group(cpus, env_cfg)


def scheduler_job() -> str | None:
    """'Slurm job 12', 'Slurm job 12_3' (an array task) or 'Ray task <id>' when this process is one."""
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"Slurm job {array_job}_{task}" if array_job and task else f"Slurm job {job}"
    task = os.environ.get(RAY_TASK_ENV)
    return f"Ray task {task}" if task else None


def rerun_checkpoint(out_dir) -> Path | None:
    """The newest checkpoint an earlier attempt of this job left in its output folder, if any."""
    from pgpong.engine.checkpoint import list_checkpoints
    found = list_checkpoints(Path(out_dir) / "checkpoints")
    return found[-1] if found else None
