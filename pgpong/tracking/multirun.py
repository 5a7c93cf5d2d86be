"""Hydra callbacks: a Hydra multirun becomes one MLflow parent run with its jobs nested under it.

    python -m pgpong.run -m lr=1e-4,1e-3 crop=karpathy,fix seed=0,1,2
    python -m pgpong.run -m hydra/launcher=joblib hydra.launcher.n_jobs=2 seed=0,1

`SweepCallback.on_multirun_start` (in the launching process) creates the parent run and hands
its id and a `sweep_id` to every job as environment variables through `hydra.job.env_set`: Hydra
re-composes each job's config from the master config's hydra overrides, and applies `env_set`
inside whatever process runs the job, so the ids reach joblib's worker processes too. Each job
leaves a `job_status.txt` in its output directory; `on_multirun_end` counts them, ends the
parent run FINISHED or FAILED and exits 1 when a job failed.
"""
import atexit
import os
import sys
import time
import uuid
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import open_dict, read_write

from pgpong.errors import PgpongError, say_error
from pgpong.tracking.naming import NOTE_TAG

PARENT_ENV = "PGPONG_SWEEP_PARENT_RUN_ID"
SWEEP_ENV = "PGPONG_SWEEP_ID"
STATUS_FILE = "job_status.txt"


def new_sweep_id() -> str:
    """A readable id unique enough to filter one sweep's runs: date-time plus 6 hex digits."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def sweep_ids() -> tuple[str | None, str | None]:
    """(parent run id, sweep id) of the multirun this job belongs to, or (None, None)."""
    return os.environ.get(PARENT_ENV) or None, os.environ.get(SWEEP_ENV) or None


def write_job_status(out_dir, status: str, message: str = "") -> None:
    """Record how a multirun job ended, for the launching process to count."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATUS_FILE).write_text(status + ("\n" + message if message else "") + "\n")


def job_statuses(sweep_dir) -> dict[str, str]:
    """{job dir name: FINISHED | FAILED | ...} for every job Hydra started under sweep_dir."""
    out = {}
    for job_dir in sorted(Path(sweep_dir).iterdir() if Path(sweep_dir).is_dir() else []):
        if (job_dir / ".hydra").is_dir():
            f = job_dir / STATUS_FILE
            # a job that left no status died without reaching its own error handling
            out[job_dir.name] = f.read_text().split("\n", 1)[0].strip() if f.exists() else "FAILED"
    return out


def threads_per_job(launcher_cfg, env_cfg) -> int:
    """Emulator threads per group for one job: parallel jobs share the cores instead of each
    taking them all (env.num_threads=0: the job's share of the cores, shared among its groups)."""
    requested = env_cfg.num_threads
    target = str(launcher_cfg.get("_target_", "")) if launcher_cfg is not None else ""
    if "Joblib" not in target:
        return requested
    n_jobs = launcher_cfg.get("n_jobs", -1)
    cores = os.cpu_count() or 1
    n_jobs = cores if n_jobs is None or n_jobs < 1 else n_jobs
    share = max(1, cores // n_jobs)
    return max(1, min(requested, share) if requested else share // max(1, env_cfg.groups))


class SweepCallback(Callback):
    """Parent MLflow run for a Hydra multirun; status of every job collected at the end."""

    def __init__(self) -> None:
        self.tracker = None
        self.sweep_id = None
        self.sweep_dir = None

    def on_multirun_start(self, config, **kwargs) -> None:
        from pgpong.tracking.tracker import make_tracker
        self.sweep_id = new_sweep_id()
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        launch_dir = config.hydra.runtime.get("cwd") or os.getcwd()
        task_overrides = list(config.hydra.overrides.task)
        launcher = str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1]
        tags = {"sweep_id": self.sweep_id, "pgpong_kind": "multirun", "hydra_sweep_overrides":
                " ".join(task_overrides) or "(none)", "launcher": launcher, "sweep_dir": str(self.sweep_dir),
                NOTE_TAG: f"Hydra multirun `{' '.join(task_overrides)}`: one nested run per job."}
        try:
            self.tracker = make_tracker(config.tracking, launch_dir, f"multirun {self.sweep_id}", tags)
        except PgpongError as e:     # e.g. an unreachable tracking server: stop before any job starts
            sys.exit(say_error(e))
        self.tracker.log_params({"sweep_overrides": " ".join(task_overrides) or "(none)", "launcher": launcher})
        atexit.register(self._end_if_open, "KILLED")     # Ctrl-C or a crash before on_multirun_end
        # quoted: a hex run id such as 123e4567 must stay a string, not become a float
        hydra_overrides = [f"++hydra.job.env_set.{SWEEP_ENV}='{self.sweep_id}'"]
        if self.tracker.run_id:
            hydra_overrides.append(f"++hydra.job.env_set.{PARENT_ENV}='{self.tracker.run_id}'")
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            config.hydra.overrides.hydra = list(config.hydra.overrides.hydra) + hydra_overrides
        print(f"pgpong: multirun {self.sweep_id} -> {self.sweep_dir}"
              + (f" (MLflow parent run {self.tracker.run_id})" if self.tracker.run_id else ""), file=sys.stderr)

    def on_multirun_end(self, config, **kwargs) -> None:
        statuses = job_statuses(self.sweep_dir)
        failed = sorted(k for k, v in statuses.items() if v != "FINISHED")
        lost = [k for k in failed if statuses[k] == "FAILED"]
        if lost and getattr(self.tracker, "uri", None):    # runs of jobs that died: FAILED, with why
            from pgpong.tracking.lost_jobs import close_lost_runs, lost_reasons
            close_lost_runs(self.tracker.uri, self.sweep_id, lost_reasons(self.sweep_dir, lost))
        self.tracker.set_tags({"jobs": len(statuses), "jobs_failed": len(failed)})
        if (self.sweep_dir / "multirun.yaml").exists():
            self.tracker.log_artifact(self.sweep_dir / "multirun.yaml")
        self._end_if_open("FAILED" if failed else "FINISHED")
        print(f"pgpong: multirun {self.sweep_id}: {len(statuses)} jobs, {len(failed)} failed"
              + (f" (job dirs {', '.join(failed)} under {self.sweep_dir})" if failed else ""), file=sys.stderr)
        if failed:
            sys.exit(1)

    def _end_if_open(self, status: str) -> None:
        tracker, self.tracker = self.tracker, None
        if tracker is not None:
            tracker.end(status)
