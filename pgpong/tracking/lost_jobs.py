"""Multirun jobs that died without ending their MLflow run: ended FAILED with the reason.

A job stopped by its scheduler (cancelled, time limit, preempted without requeue) or lost with
its node cannot always end its own run: a signal leaves it KILLED, SIGKILL or a dead node leaves
it RUNNING. The launcher knows why (the scheduler's state, Ray's error) and writes it into the
job's status file; at the end of the multirun these runs are ended FAILED with that reason.
"""
from pathlib import Path

from pgpong.tracking.multirun import STATUS_FILE

NO_STATUS = "the job left no status (killed before it could record one, or its node died)"


def lost_reasons(sweep_dir, job_dirs) -> dict[int, str]:
    """{hydra job number: reason} for the given failed job folders, from their status files."""
    reasons = {}
    for name in job_dirs:
        f = Path(sweep_dir) / name / STATUS_FILE
        if str(name).isdigit():
            lines = f.read_text().strip().split("\n", 1) if f.exists() else []
            reasons[int(name)] = lines[1].strip() if len(lines) > 1 else NO_STATUS
    return reasons


def close_lost_runs(tracking_uri: str, sweep_id: str, reasons: dict[int, str]) -> list[str]:
    """End FAILED, tagged with its reason, each RUNNING or KILLED run of the sweep's failed jobs.

    A FAILED run already says why itself and a FINISHED run (a requeued job that resumed and
    completed) is left alone. Returns the run ids ended.
    """
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=tracking_uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    closed = []
    for run in client.search_runs(exps, f"tags.sweep_id = '{sweep_id}'"):
        num = run.data.tags.get("hydra_job_num", "")
        if run.info.status in ("RUNNING", "KILLED") and num.isdigit() and int(num) in reasons:
            client.set_tag(run.info.run_id, "failure_reason", reasons[int(num)][:5000])
            client.set_terminated(run.info.run_id, "FAILED")
            closed.append(run.info.run_id)
    return closed
