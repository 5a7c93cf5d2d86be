"""The launcher configs, with defaults for this trainer (2 CPUs per job: 2 emulator threads)."""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class PgpongSlurmConf(SlurmQueueConf):
    """hydra-submitit-launcher's Slurm keys; only the defaults differ (sbatch option in brackets).

    cpus_per_task [--cpus-per-task]: 2, the CPUs of one run (its emulator threads follow: one per CPU in all).
    timeout_min [--time]: 240; at `signal_delay_s` before the limit submitit's checkpoint hook
      requeues the job, and the requeued job resumes from its last checkpoint, up to
      `max_num_timeout` times.
    array_parallelism [--array=...%N]: 64 jobs of the array run at once at most.
    """
    _target_: str = "hydra_plugins.pgpong_launchers.slurm.SlurmLauncher"
    cpus_per_task: Optional[int] = 2
    timeout_min: int = 240
    max_num_timeout: int = 20
    array_parallelism: int = 64
    partition: Optional[str] = None
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    name: str = "pgpong"


@dataclass
class PgpongRayConf:
    """Ray keys.

    address: the cluster's address (host:port of `ray start --head`, or ray://host:10001);
      null: $RAY_ADDRESS, else a Ray started for this multirun on this machine.
    num_cpus: CPUs each job reserves, 2; the job's emulator threads follow it (one per CPU in all).
    max_retries: times Ray reruns a job whose worker process or node died; the rerun resumes
      from the job's last checkpoint.
    init: further keyword arguments for ray.init (e.g. {namespace: pgpong}).
    """
    _target_: str = "hydra_plugins.pgpong_launchers.ray.RayLauncher"
    address: Optional[str] = None
    num_cpus: int = 2
    max_retries: int = 1
    init: Dict[str, Any] = field(default_factory=dict)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/launcher", name="slurm", node=PgpongSlurmConf, provider="pgpong")
    cs.store(group="hydra/launcher", name="ray", node=PgpongRayConf, provider="pgpong")
