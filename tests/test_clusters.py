"""Multiruns and sweeps on real clusters: a one-node Slurm cluster and a local Ray head.

Each result is read back through MLflow's and Optuna's own clients (and Slurm's sacct). The
node-death tests stop jobs the way a cluster does (scancel, scontrol requeue, a worker process
killed) and check the FAILED record, the checkpoint `resume=` finds, and the resumed rerun.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.clusters import ray_cluster, slurm_cluster  # noqa: F401  (pytest fixtures)
from tests.conftest import TINY, run_cli
from tests.servers import mlflow_server, postgres_server  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.slow

SPEC = """\
episodes: 2
report_every: 1
seeds: [0]
objective: {kind: final}
sampler: {name: random}
pruner: {name: none}
params:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""
TINY_TRIAL = ["env.max_episode_steps=60", "H=8", "batch_size=1", "checkpoint_every=100", "env.num_envs=2"]
JOB_PREFIX = {"slurm": "Slurm job ", "ray": "Ray task "}


def multirun_launcher(kind: str, cluster, cpus: int = 1, **keys) -> list[str]:
    if kind == "slurm":
        args = ["hydra/launcher=slurm", f"hydra.launcher.cpus_per_task={cpus}", "hydra.launcher.timeout_min=10"]
    else:
        args = ["hydra/launcher=ray", f"hydra.launcher.address={cluster.info['address']}", f"hydra.launcher.num_cpus={cpus}"]
    return args + [f"hydra.launcher.{k}={v}" for k, v in keys.items()]


def multirun_runs(uri: str, stderr: str):
    """(parent run, {hydra job number: run}) of the multirun that printed stderr."""
    sweep_id = re.search(r"pgpong: multirun (\S+) ->", stderr).group(1)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("pgpong").experiment_id
    [parent] = client.search_runs([exp], f"tags.sweep_id = '{sweep_id}' and tags.pgpong_kind = 'multirun'")
    jobs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, {int(r.data.tags["hydra_job_num"]): r for r in jobs}


@pytest.mark.parametrize("kind", ["slurm", "ray"])
def test_a_multirun_runs_as_cluster_jobs_under_one_parent_run_and_a_failed_job_does_not_stop_it(
        kind, request, tmp_path, mlflow_server):
    cluster = request.getfixturevalue(f"{kind}_cluster")
    start = time.monotonic()
    r = run_cli(["-m", *multirun_launcher(kind, cluster), *TINY, "seed=0,1", "resume=null,missing.npz",
                 f"tracking.uri={mlflow_server}"], tmp_path, env=cluster.env, timeout=300)
    assert r.returncode == 1, r.stderr[-3000:]      # 1: a job failed; the multirun itself ran to its end
    assert "4 jobs, 2 failed" in r.stderr, r.stderr[-3000:]
    parent, jobs = multirun_runs(mlflow_server, r.stderr)
    assert parent.info.status == "FAILED" and parent.data.tags["jobs_failed"] == "2"
    assert sorted(jobs) == [0, 1, 2, 3]
    for num, run in sorted(jobs.items()):
        tags = run.data.tags
        assert tags["scheduler_job"].startswith(JOB_PREFIX[kind]), tags
        if "missing.npz" in tags["hydra_overrides"]:
            assert run.info.status == "FAILED" and "missing.npz: no such model/checkpoint file" in tags["failure_reason"]
        else:
            assert run.info.status == "FINISHED", tags.get("failure_reason")
            assert run.data.params["env.num_threads"] == "1"          # the job's 1 CPU
            assert "time/elapsed_s" in run.data.metrics
        print(f"{kind} multirun job {num}: {tags['scheduler_job']} MLflow run {run.info.run_id} {run.info.status}")
    if kind == "slurm":      # Slurm's record: every job of the array ran and ended
        array = jobs[0].data.tags["scheduler_job"].split()[-1].split("_")[0]
        states = ended_jobs(cluster, array, 4)
        assert states == [f"{array}_{i}|COMPLETED" for i in range(4)], states
    print(f"{kind} multirun parent run {parent.info.run_id} {parent.info.status} in {time.monotonic() - start:.0f} s")


@pytest.mark.parametrize("kind", ["slurm", "ray"])
def test_sweep_workers_run_as_cluster_jobs_sharing_one_study(kind, request, tmp_path, postgres_server, mlflow_server):
    cluster = request.getfixturevalue(f"{kind}_cluster")
    (tmp_path / "spec.yaml").write_text(SPEC)
    launcher = ["launcher=slurm"] if kind == "slurm" else ["launcher=ray", f"launcher.address={cluster.info['address']}"]
    study, n_trials, start = f"on_{kind}", 4, time.monotonic()
    r = run_cli(["sweep=spec.yaml", f"n_trials={n_trials}", f"storage={postgres_server}", f"study={study}",
                 f"tracking.uri={mlflow_server}", "workers=2", *launcher, "launcher.cpus=1", *TINY_TRIAL],
                tmp_path, env=cluster.env, module="pgpong.sweep", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    submitted = re.findall(r"sweep worker \d/2: ((?:Slurm job|Ray task) \S+)", r.stderr)
    assert len(submitted) == 2 and all(f"{j}: COMPLETED" in r.stderr for j in submitted), r.stderr[-3000:]

    s = optuna.load_study(study_name=study, storage=postgres_server)
    trials = [t for t in s.get_trials() if not t.user_attrs.get("surplus")]
    assert sorted(t.number for t in trials) == list(range(n_trials))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    ran_in = {re.search(r"\((.*)\)", t.user_attrs["worker"]).group(1) for t in trials}
    assert ran_in == set(submitted), (ran_in, submitted)       # both workers took trials, inside their jobs

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("pgpong").experiment_id
    [parent] = client.search_runs([exp], f"tags.pgpong_kind = 'study' and tags.optuna_study = '{study}'")
    for t in trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["env.num_threads"] == "1"
        print(f"{kind} sweep trial {t.number}: {t.state.name} value {t.value:+.3f} by {t.user_attrs['worker']}, "
              f"MLflow run {run.info.run_id} {run.info.status}")
    if kind == "slurm":
        array = submitted[0].split()[-1].split("_")[0]
        states = ended_jobs(cluster, array, 2)
        assert states == [f"{array}_{i}|COMPLETED" for i in range(2)], states
    print(f"{kind} sweep: workers {submitted}, study parent run {parent.info.run_id}, "
          f"{time.monotonic() - start:.0f} s")


def ended_jobs(cluster, array: str, n: int) -> list[str]:
    """`JobID|State` of a Slurm array's jobs from sacct, sorted, once all n are listed in an ended
    state: slurmctld sends job records to the accounting daemon asynchronously, so the last job
    can be missing (or still RUNNING there) for a moment after the multirun has ended."""
    def listed():
        states = sorted(cluster.run("sacct", "-n", "-X", "-j", array, "-o", "JobID,State", "--parsable2").split())
        ended = len(states) == n and not any(s.split("|")[-1] in ("PENDING", "RUNNING", "COMPLETING") for s in states)
        return states if ended else None
    return wait_for(f"sacct listing the {n} jobs of array {array} as ended", listed, 60)


def wait_for(what: str, ok, timeout_s: float, proc=None):
    deadline = time.monotonic() + timeout_s
    while True:
        value = ok()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the multirun ended first: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s} s")
        time.sleep(0.3)


def checkpoints(sweep_root: Path, num: int) -> list[Path]:
    return sorted(sweep_root.glob(f"*/*/{num}/checkpoints/ckpt-*.npz"))


def start_multirun(args, cwd, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pgpong.run", "-m", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **env})


def check_resume_finds(run, cwd, uri) -> None:
    """`resume=<run id>` finds the stopped job's newest checkpoint and continues from it."""
    ckpts = sorted(Path(run.data.tags["checkpoint_dir"]).glob("ckpt-*.npz"))
    assert ckpts, run.data.tags
    episode = int(re.search(r"ckpt-e(\d+)", ckpts[-1].name).group(1))
    r = run_cli([f"resume={run.info.run_id}", f"episodes={episode + 1}", f"tracking.uri={uri}"], cwd)
    assert r.returncode == 0 and f"resumed from {ckpts[-1]} at episode {episode}" in r.stderr, r.stderr[-3000:]


def test_slurm_a_cancelled_job_is_failed_with_slurms_reason_and_a_requeued_job_resumes(
        tmp_path, slurm_cluster, mlflow_server):
    budget = [o for o in TINY if not o.startswith("episodes=")] + ["episodes=60"]
    proc = start_multirun([*multirun_launcher("slurm", slurm_cluster), *budget, "seed=0,1",
                           f"tracking.uri={mlflow_server}"], tmp_path, slurm_cluster.env)
    root = tmp_path / "multirun"
    wait_for("a checkpoint from each job", lambda: checkpoints(root, 0) and checkpoints(root, 1), 180, proc)
    array = slurm_cluster.run("squeue", "-h", "-o", "%i").split()[0].split("_")[0]
    slurm_cluster.run("scontrol", "requeue", f"{array}_0")     # as after a node failure or preemption
    slurm_cluster.run("scancel", f"{array}_1")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "2 jobs, 1 failed" in err, err[-3000:]
    parent, jobs = multirun_runs(mlflow_server, err)

    requeued, cancelled = jobs[0], jobs[1]
    assert requeued.info.status == "FINISHED", requeued.data.tags
    resumed_from = requeued.data.tags["resumed_from_checkpoint"]       # the rerun continued, not restarted
    assert int(re.search(r"ckpt-e(\d+)", resumed_from).group(1)) >= 1
    assert re.search(r"ckpt-e00000060", checkpoints(root, 0)[-1].name)
    assert cancelled.info.status == "FAILED"
    assert cancelled.data.tags["failure_reason"].startswith(f"Slurm job {array}_1 ended CANCELLED"), cancelled.data.tags
    check_resume_finds(cancelled, tmp_path, mlflow_server)
    print(f"slurm requeued job {array}_0: MLflow run {requeued.info.run_id} FINISHED, resumed from {resumed_from}")
    print(f"slurm cancelled job {array}_1: MLflow run {cancelled.info.run_id} FAILED: "
          f"{cancelled.data.tags['failure_reason']}")


def ray_job_pids(root: Path, num: int) -> list[int]:
    """Processes running multirun job `num` under pgpong's Ray launcher: Ray titles a worker
    ray::<function> while it runs a task, and the job holds its log file in its folder open."""
    folders = [str(d) + "/" for d in root.glob(f"*/*/{num}")]
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if not (d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::run_in_worker")):
                continue
            if any(os.readlink(fd).startswith(tuple(folders)) for fd in (d / "fd").iterdir()) and folders:
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def test_ray_a_job_whose_worker_dies_is_retried_from_its_checkpoint_or_failed_with_rays_reason(
        tmp_path, ray_cluster, mlflow_server):
    budget = [o for o in TINY if not o.startswith("episodes=")] + ["episodes=60"]
    proc = start_multirun([*multirun_launcher("ray", ray_cluster, cpus=2, max_retries=1), *budget, "seed=0,1",
                           f"tracking.uri={mlflow_server}"], tmp_path, ray_cluster.env)
    root = tmp_path / "multirun"
    wait_for("job 0's first checkpoint", lambda: checkpoints(root, 0), 180, proc)
    [pid] = wait_for("job 0's worker", lambda: ray_job_pids(root, 0), 60, proc)
    os.kill(pid, signal.SIGKILL)       # the job's process dies: Ray retries it once
    wait_for("job 1's first checkpoint", lambda: checkpoints(root, 1), 240, proc)
    for _ in range(2):                 # job 1 dies, and dies again in its retry: no retry left
        [pid] = wait_for("job 1's worker", lambda: ray_job_pids(root, 1), 120, proc)
        os.kill(pid, signal.SIGKILL)
        wait_for("the worker gone", lambda: pid not in ray_job_pids(root, 1), 30)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "2 jobs, 1 failed" in err, err[-3000:]
    parent, jobs = multirun_runs(mlflow_server, err)

    retried, lost = jobs[0], jobs[1]
    assert retried.info.status == "FINISHED", (retried.data.tags.get("failure_reason"), err[-4000:])
    assert int(re.search(r"ckpt-e(\d+)", retried.data.tags["resumed_from_checkpoint"]).group(1)) >= 1
    assert lost.info.status == "FAILED"
    assert "ended without a result" in lost.data.tags["failure_reason"], lost.data.tags
    check_resume_finds(lost, tmp_path, mlflow_server)
    print(f"ray retried job 0: MLflow run {retried.info.run_id} FINISHED, resumed from "
          f"{retried.data.tags['resumed_from_checkpoint']}")
    print(f"ray lost job 1: MLflow run {lost.info.run_id} FAILED: {lost.data.tags['failure_reason']}")
