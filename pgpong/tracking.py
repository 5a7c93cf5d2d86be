"""Trackers: where params, metrics and artifacts go. MLflow (batched writes) or nowhere.

The trainer only calls `log_metrics(metrics, step)`; the tracker decides when to write. MLflow
per-call writes cost ~10 ms against SQLite, so metrics are buffered and sent with `log_batch`
at most every `flush_every_s` seconds, at the end, and on `flush()`.
"""
import os
import time
from typing import Any

from pgpong.errors import PgpongError
from pgpong.paths import resolve_sqlite_uri

MAX_PARAMS_PER_BATCH = 100    # MLflow's limits for one log_batch call
MAX_METRICS_PER_BATCH = 1000


class NullTracker:
    """Tracking switched off (`tracking=none`): everything is dropped."""
    run_id = None

    def log_params(self, params: dict) -> None: pass
    def set_tags(self, tags: dict) -> None: pass
    def log_metrics(self, metrics: dict, step: int) -> None: pass
    def log_artifact(self, path, artifact_path: str | None = None) -> None: pass
    def flush(self) -> None: pass
    def end(self, status: str = "FINISHED") -> None: pass


def check_reachable(uri: str, timeout_s: int = 5) -> None:
    """Fail early, with the URI in the message, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
    except requests.RequestException as e:
        raise PgpongError(f"tracking.uri={uri}: the MLflow tracking server does not answer "
                          f"({type(e).__name__}); start it or use tracking.uri=sqlite:///mlflow.db") from None


def experiment_id(client, name: str) -> str:
    """The id of experiment `name`, created if missing (safe when two runs race to create it)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


class MlflowTracker:
    """One MLflow run, written through MlflowClient (no fluent global state)."""

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict,
                 flush_every_s: float = 10.0, parent_run_id: str | None = None):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        from mlflow.tracking import MlflowClient
        check_reachable(uri)
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        tags = {k: str(v) for k, v in tags.items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(experiment_id(self.client, experiment), run_name=run_name, tags=tags)
        self._start(run, flush_every_s)

    def _start(self, run, flush_every_s: float) -> None:
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self.flush_every_s = flush_every_s
        self._pending: list = []
        self._last_flush = time.monotonic()
        self.write_s = 0.0   # seconds spent writing metrics (the cost of tracking during training)

    @classmethod
    def attach(cls, uri: str, run_id: str, flush_every_s: float = 10.0) -> "MlflowTracker":
        """A tracker writing to an existing run (e.g. a sweep's parent run shared by workers)."""
        from mlflow.tracking import MlflowClient
        self = cls.__new__(cls)
        self.client, self.uri = MlflowClient(tracking_uri=uri), uri
        self._start(self.client.get_run(run_id), flush_every_s)
        return self

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param
        items = [Param(k, _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        t0 = time.monotonic()
        pending, self._pending = self._pending, []
        for i in range(0, len(pending), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[i:i + MAX_METRICS_PER_BATCH])
        self._last_flush = time.monotonic()
        self.write_s += self._last_flush - t0

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status)


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


def make_tracker(tracking_cfg, launch_dir, run_name: str, tags: dict, parent_run_id: str | None = None):
    """The tracker the config asks for; relative SQLite URIs resolve against launch_dir."""
    if tracking_cfg.backend == "none":
        return NullTracker()
    uri = resolve_sqlite_uri(tracking_cfg.uri, launch_dir, "tracking.uri")
    return MlflowTracker(uri, tracking_cfg.experiment, run_name, tags, tracking_cfg.flush_every_s, parent_run_id)
