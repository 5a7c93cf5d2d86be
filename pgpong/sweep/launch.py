"""N sweep workers as cluster jobs sharing one study: `workers=N launcher=slurm|ray`.

    python -m pgpong.sweep sweep=lr_h n_trials=100 storage=postgresql://user@db/optuna \\
        tracking.uri=http://mlflow:5000 workers=8 launcher=slurm launcher.partition=cpu
    python -m pgpong.sweep sweep=lr_h n_trials=100 storage=postgresql://user@db/optuna \\
        tracking.uri=http://mlflow:5000 workers=8 launcher=ray launcher.address=10.0.0.5:6379

Keys, besides the sweep's own:
  workers=N               how many workers (jobs) to start, N >= 1
  launcher=slurm|ray      where they run
  launcher.cpus=2         CPUs each worker asks for; its trials' emulator threads follow
  launcher.partition=P    Slurm partition (default: the cluster's default partition)
  launcher.time=240       Slurm time limit per worker, minutes; at the limit the worker is requeued
  launcher.requeues=20    how often a worker may be requeued (time limit, preemption)
  launcher.address=A      Ray: the cluster's address (default: $RAY_ADDRESS, else a local Ray)

The command is first checked here as each worker will check it (spec, overrides, storage,
tracking server), so bad input stops before anything is submitted. Each worker then runs
`python -m pgpong.sweep` with the same sweep arguments, in this directory (so a cluster needs
it on a shared file system, and this Python at the same path on every node); the workers share
the study through `storage` and stop together when it holds n_trials trials. This process waits
for them, prints each job's id and end state, then the study's trial counts.
"""
import os
import subprocess
import sys
from pathlib import Path

from pgpong.cluster import CPUS_ENV, RAY_TASK_ENV, threads_per_group
from pgpong.errors import PgpongError, entry_point

LAUNCHERS = ("slurm", "ray")
OPTIONS = {"launcher.cpus": 2, "launcher.partition": None, "launcher.time": 240, "launcher.requeues": 20,
           "launcher.address": None}
INT_OPTIONS = ("launcher.cpus", "launcher.time", "launcher.requeues")


def wanted(argv: list[str]) -> bool:
    """Whether the command asks for cluster workers (workers= or launcher= given)."""
    return any(a.partition("=")[0] in ("workers", "launcher") for a in argv)


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """(launch settings, the sweep's own arguments); PgpongError naming a bad key."""
    opts, rest = dict(OPTIONS), []
    for a in argv:
        key, _, value = a.partition("=")
        if key in ("workers", "launcher") or key in OPTIONS:
            opts[key] = value
        elif key.startswith("launcher."):
            raise PgpongError(f"pgpong.sweep: {key}: unknown; allowed: {', '.join(OPTIONS)}")
        else:
            rest.append(a)
    workers, launcher = opts.get("workers"), opts.get("launcher")
    if workers is None or not str(workers).isdigit() or int(workers) < 1:
        raise PgpongError(f"pgpong.sweep: workers={workers if workers is not None else ''}: "
                          f"must be a positive integer (with launcher={'|'.join(LAUNCHERS)})")
    if launcher not in LAUNCHERS:
        raise PgpongError(f"pgpong.sweep: launcher={launcher or ''}: must be one of {', '.join(LAUNCHERS)}")
    for key in INT_OPTIONS:
        if not str(opts[key]).isdigit() or int(opts[key]) < (0 if key == "launcher.requeues" else 1):
            raise PgpongError(f"pgpong.sweep: {key}={opts[key]}: must be a positive integer")
        opts[key] = int(opts[key])
    opts["workers"] = int(workers)
    return opts, rest


def worker_command(rest: list[str], p: dict, cpus: int) -> list[str]:
    """The worker's command line: the sweep's arguments, emulator threads matched to its CPUs."""
    extra = [] if any(a.lstrip("+~").startswith("env.num_threads=") for a in rest) or \
        any(q.name == "env.num_threads" for q in p["spec"].params) else \
        [f"env.num_threads={threads_per_group(cpus, p['cfg'].env)}"]
    return [sys.executable, "-m", "pgpong.sweep", *rest, *extra]


class SweepWorker:
    """One worker as a submitit job. On a time limit or preemption submitit calls `checkpoint`
    and requeues the job; the requeued worker continues the study (trials stopped mid-way are
    marked FAIL by the study's heartbeat)."""

    def __init__(self, cmd: list[str], cwd: str, cpus: int):
        self.cmd, self.cwd, self.cpus = cmd, cwd, cpus

    def __call__(self) -> int:
        r = subprocess.run(self.cmd, cwd=self.cwd, env={**os.environ, CPUS_ENV: str(self.cpus)})
        if r.returncode:
            raise RuntimeError(f"sweep worker exited with code {r.returncode}")
        return 0

    def checkpoint(self):
        import submitit
        return submitit.helpers.DelayedSubmission(self)


def run_slurm(cmd: list[str], opts: dict, launch_dir: Path, study: str) -> list[tuple[str, str]]:
    """Submit the workers as one Slurm job array; [(job id, end state)] once all ended."""
    import submitit
    folder = launch_dir / "outputs" / "sweeps" / study / "slurm" / "%j"
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm",
                                     slurm_max_num_timeout=opts["launcher.requeues"])
    params = {"cpus_per_task": opts["launcher.cpus"], "timeout_min": opts["launcher.time"],
              "name": f"pgpong-sweep-{study}", "slurm_array_parallelism": opts["workers"]}
    if opts["launcher.partition"]:
        params["slurm_partition"] = opts["launcher.partition"]
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(SweepWorker(cmd, str(launch_dir), opts["launcher.cpus"]))
                for _ in range(opts["workers"])]
    for i, job in enumerate(jobs):
        print(f"pgpong: sweep worker {i + 1}/{len(jobs)}: Slurm job {job.job_id}", file=sys.stderr, flush=True)
    ended = []
    for job in jobs:
        try:
            job.result()
            state = "COMPLETED"
        except Exception:     # the worker failed or Slurm stopped it: Slurm's state says which
            state = job.watcher.get_state(job.job_id, mode="force")
        ended.append((f"Slurm job {job.job_id}", state))
    return ended


def ray_worker(cmd: list[str], cwd: str, cpus: int) -> int:
    """One worker inside a Ray task: the sweep command as a child process, holding the task's CPUs."""
    import ray
    env = {**os.environ, CPUS_ENV: str(cpus), RAY_TASK_ENV: ray.get_runtime_context().get_task_id()}
    return subprocess.run(cmd, cwd=cwd, env=env).returncode


def run_ray(cmd: list[str], opts: dict, launch_dir: Path) -> list[tuple[str, str]]:
    """Start the workers as Ray tasks; [(task id, end state)] once all ended."""
    import ray
    ray.init(address=opts["launcher.address"])
    try:
        task = ray.remote(num_cpus=opts["launcher.cpus"], max_retries=0)(ray_worker)
        refs = [task.remote(cmd, str(launch_dir), opts["launcher.cpus"]) for _ in range(opts["workers"])]
        for i, ref in enumerate(refs):
            print(f"pgpong: sweep worker {i + 1}/{len(refs)}: Ray task {ref.task_id().hex()}",
                  file=sys.stderr, flush=True)
        ended = []
        for ref in refs:
            try:
                code = ray.get(ref)
                state = "COMPLETED" if code == 0 else f"FAILED (exit code {code})"
            except ray.exceptions.RayError as e:
                state = f"FAILED ({type(e).__name__})"
            ended.append((f"Ray task {ref.task_id().hex()}", state))
        return ended
    finally:
        ray.shutdown()


def open_tracking_store(tracking_cfg, launch_dir: Path) -> None:
    """Create the MLflow store's tables and experiment once, here: workers racing to create a fresh
    SQLite store fail its schema migration."""
    if tracking_cfg.backend == "none":
        return
    from pgpong.paths import resolve_sqlite_uri
    from pgpong.tracking.store import faults, open_client
    from pgpong.tracking.tracker import experiment_id
    uri = resolve_sqlite_uri(tracking_cfg.uri, launch_dir, "tracking.uri")
    with faults(uri):
        experiment_id(open_client(uri), tracking_cfg.experiment)


@entry_point
def main(argv: list[str]) -> int:
    """Check, submit, wait, report; 0 when every worker completed."""
    import optuna

    from pgpong.sweep.study import counts, prepare
    launch_dir = Path(os.getcwd())
    opts, rest = parse(argv)
    p = prepare(rest, launch_dir)
    cmd = worker_command(rest, p, opts["launcher.cpus"])
    open_tracking_store(p["cfg"].tracking, launch_dir)
    study = p["study_name"]
    print(f"pgpong: study {study!r} in {p['storage_id']}: {opts['workers']} workers on {opts['launcher']}, "
          f"{opts['launcher.cpus']} CPUs each", file=sys.stderr, flush=True)
    if opts["launcher"] == "slurm":
        ended = run_slurm(cmd, opts, launch_dir, study)
    else:
        ended = run_ray(cmd, opts, launch_dir)
    for job, state in ended:
        print(f"pgpong: {job}: {state}", file=sys.stderr)
    c = counts(optuna.load_study(study_name=study, storage=p["storage"]))
    print(f"pgpong: study {study!r}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed, "
          f"{c['RUNNING']} running ({sum(c.values())} trials)", file=sys.stderr)
    return 0 if all(state == "COMPLETED" for _, state in ended) else 1
