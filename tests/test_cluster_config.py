"""The cluster launchers' defaults and bad input, without a cluster (tests/test_clusters.py runs them)."""
import pytest
from hydra import compose, initialize_config_dir

from pgpong import cluster, config
from tests.conftest import CONF_DIR, compose_cfg, run_cli


def launcher_cfg(name: str):
    """The composed hydra.launcher node, as the app sees it (schemas and launchers registered)."""
    config.register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True).hydra.launcher


def test_slurm_and_ray_launchers_ask_for_2_cpus_per_job_by_default():
    slurm = launcher_cfg("slurm")
    assert slurm._target_ == "hydra_plugins.pgpong_launchers.slurm.SlurmLauncher"
    assert (slurm.cpus_per_task, slurm.timeout_min, slurm.max_num_timeout, slurm.array_parallelism) == (2, 240, 20, 64)
    ray = launcher_cfg("ray")
    assert ray._target_ == "hydra_plugins.pgpong_launchers.ray.RayLauncher"
    assert (ray.num_cpus, ray.max_retries, ray.address) == (2, 1, None)


@pytest.mark.parametrize("env,num_envs,expected", [
    ({}, 16, None),                                   # not a scheduler's job: the run's own setting stays
    ({"SLURM_CPUS_PER_TASK": "2"}, 16, 1),            # 2 groups: a thread per CPU in all
    ({"SLURM_CPUS_PER_TASK": "8"}, 16, 4),
    ({"SLURM_CPUS_PER_TASK": "8"}, 2, 1),             # one thread per emulator at most (1 per group)
    ({cluster.CPUS_ENV: "1", "SLURM_CPUS_PER_TASK": "4"}, 16, 1),
])
def test_a_jobs_emulator_threads_share_the_cpus_its_scheduler_granted_among_the_groups(monkeypatch, env, num_envs,
                                                                                      expected):
    for var in (cluster.CPUS_ENV, "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert cluster.job_threads(compose_cfg([f"env.num_envs={num_envs}"]).env) == expected


@pytest.mark.parametrize("args,message", [
    (["workers=0", "launcher=slurm"], "workers=0: must be a positive integer"),
    (["workers=2", "launcher=pbs"], "launcher=pbs: must be one of slurm, ray"),
    (["workers=2"], "launcher=: must be one of slurm, ray"),
    (["workers=2", "launcher=slurm", "launcher.cpu=2"], "launcher.cpu: unknown; allowed: launcher.cpus"),
    (["workers=2", "launcher=ray", "launcher.cpus=two"], "launcher.cpus=two: must be a positive integer"),
])
def test_bad_sweep_launch_keys_are_one_line_naming_the_key(tmp_path, args, message):
    r = run_cli(["sweep=lr_h", *args], tmp_path, module="pgpong.sweep", timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: pgpong.sweep: ") and message in r.stderr
