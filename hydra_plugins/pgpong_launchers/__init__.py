"""Hydra launchers for pgpong on clusters: `hydra/launcher=slurm` and `hydra/launcher=ray`.

    python -m pgpong.run -m hydra/launcher=slurm hydra.launcher.partition=cpu seed=0,1,2
    python -m pgpong.run -m hydra/launcher=ray hydra.launcher.address=10.0.0.5:6379 seed=0,1,2

Hydra finds plugins in the `hydra_plugins` namespace package; importing this package registers
both launcher configs in Hydra's ConfigStore. Each job asks its scheduler for `cpus_per_task`
(Slurm) or `num_cpus` (Ray) CPUs, and the job's emulator threads are one per CPU in all, shared
among its groups (pgpong.cluster.job_threads). A job that its scheduler killed, or whose node died,
is recorded FAILED with the scheduler's reason while the multirun waits for the others.
"""
from hydra_plugins.pgpong_launchers.config import register

register()
