"""Trackers: where params, metrics and artifacts go. MLflow (batched writes) or nowhere.

    python -m pgpong.tracking replay outputs/<date>/<time>    # send writes a lost server missed

The trainer only calls `log_metrics(metrics, step)`; the tracker decides when to write. MLflow
per-call writes cost ~10 ms against SQLite, so metrics are buffered and sent with `log_batch`
at most every `flush_every_s` seconds, at the end, and on `flush()` (the trainer flushes before
every checkpoint, so what a checkpoint covers is sent or kept on disk).

When the tracking server goes away mid-run, training goes on: every write that fails is kept,
in order, in `tracking-backlog.jsonl` in the run's output folder (fsync'd line by line), and
retried at every flush (`tracking.flush_every_s`, at least 1 s apart); once the server answers
again the backlog is replayed and deleted. If it is still there at the end, the run stays
RUNNING (incomplete) on the server and the user is told the replay command above.

Exactly once: a metric point is (key, step), the step being the episode. A replay leaves out
the points MLflow already holds for their (key, step), so replaying twice, or after a resume,
adds nothing twice. A resumed run first sends what the stopped process kept in its backlog,
then leaves out the points of the episodes it plays again that MLflow already has (after a hard
kill those episodes were logged before the stop: the first write is kept). SQLite's "database
is locked" (two runs writing one mlflow.db) is retried with backoff instead.

A new run on a SQLite file does not wait for MLflow: importing it and creating a store's tables
take seconds, so the tracker is made in a background thread while training starts
(DeferredTracker); writes made meanwhile are queued, stamped with the time they were made, and
the run's start time is the moment it was asked for. What can fail without MLflow (a corrupt or
read-only file, a folder that refuses a new one) is still checked before training.
"""
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pgpong.errors import PgpongError, entry_point
from pgpong.files import write_atomic
from pgpong.paths import resolve_sqlite_uri
from pgpong.tracking import milestones
from pgpong.tracking.store import check_store, faults, open_client, reason, sqlite_path

MAX_PARAMS_PER_BATCH = 100    # MLflow's limits for one log_batch call
MAX_METRICS_PER_BATCH = 1000
LOCKED_RETRY_S = 60.0         # how long "database is locked" is retried before giving up
BACKLOG_NAME = "tracking-backlog.jsonl"
# the experiment tag by which MLflow 3's UI can tell model training (runs, metric charts) from GenAI (traces)
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
PERMANENT_ERRORS = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                    "INVALID_STATE", "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED")


def is_locked(e: BaseException) -> bool:
    return "database is locked" in str(e) or "database table is locked" in str(e)


def retry_locked(fn, *args, timeout_s: float = LOCKED_RETRY_S, **kwargs):
    """fn(*args, **kwargs), retried with jittered backoff while SQLite says the database is locked."""
    deadline, delay = time.monotonic() + timeout_s, 0.05
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_locked(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)


def is_unreachable(e: BaseException) -> bool:
    """A failure of the store, not of the request: worth keeping the write and trying later."""
    import requests
    from mlflow.exceptions import MlflowException
    if isinstance(e, MlflowException):
        return e.error_code not in PERMANENT_ERRORS
    return isinstance(e, (requests.RequestException, OSError, ConnectionError)) or is_locked(e)


class NullTracker:
    """Tracking switched off (`tracking=none`): everything is dropped."""
    run_id = None

    def log_params(self, params: dict) -> None: pass
    def set_tags(self, tags: dict) -> None: pass
    def log_metrics(self, metrics: dict, step: int, timestamp_ms: int | None = None) -> None: pass
    def log_artifact(self, path, artifact_path: str | None = None) -> None: pass
    def flush(self) -> None: pass
    def audit(self, first_episode: int, episodes: int, first_update: int, updates: int) -> str: return ""
    def time_to(self) -> dict | None: return None
    def end(self, status: str = "FINISHED") -> None: pass
    def when_ready(self, fn) -> None: fn(self)


def experiment_id(client, name: str) -> str:
    """The id of experiment `name`, created if missing (safe when two runs race to create it).

    It is tagged as model training (KIND_TAG); one made elsewhere without a kind gets the tag, one
    given another kind keeps it.
    """
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, tags={KIND_TAG: MODEL_TRAINING})
        except Exception:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if KIND_TAG not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, MODEL_TRAINING)
    return exp.experiment_id


class MlflowTracker:
    """One MLflow run, written through MlflowClient (no fluent global state)."""

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict,
                 flush_every_s: float = 10.0, parent_run_id: str | None = None,
                 resume_run_id: str | None = None, backlog_path=None, stopped_backlog=None, start_ms: int | None = None):
        self.client = open_client(uri)   # answers (or one line), tables created under the first-use lock
        self.uri = uri
        tags = {k: str(v) for k, v in tags.items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        self.resumed, self.resume_count = False, 0
        with faults(uri):          # e.g. a read-only mlflow.db refuses the run's first write: one line
            run = self._existing_run(resume_run_id) if resume_run_id else None
            if run is not None:      # continue the interrupted run: same run id, metrics go on
                self.resumed = True
                retry_locked(self.client.update_run, run.info.run_id, status="RUNNING")
                n = self.resume_count = int(run.data.tags.get("resume_count", "0")) + 1
                tags = {**tags, "resume_count": str(n)}
                from mlflow.entities import RunTag
                retry_locked(self.client.log_batch, run.info.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            else:
                if resume_run_id:
                    tags["resumed_from_run"] = resume_run_id
                exp_id = retry_locked(experiment_id, self.client, experiment)
                run = retry_locked(self.client.create_run, exp_id, start_time=start_ms, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self.flush_every_s = flush_every_s
        self.retry_every_s = max(flush_every_s, 1.0)   # while the store is away
        self.backlog_path = Path(backlog_path) if backlog_path else None
        self._backlog: list = []      # writes the store refused for now, oldest first
        self._retry_at = 0.0
        self._replayed = 0
        self._pending: list = []
        self._last_flush = time.monotonic()
        self.write_s = 0.0   # seconds spent writing metrics (the cost of tracking during training)
        # a training run continued after a stop: per key, the steps MLflow holds already (not sent again)
        continued = self.resumed and stopped_backlog is not None
        self._present: dict = present_steps(self.client, self.run_id, run.data.metrics) if continued else {}
        self.skipped = 0    # points left out for that reason
        if continued and Path(stopped_backlog).is_file():
            self._take_over(Path(stopped_backlog))

    def when_ready(self, fn) -> None:
        fn(self)

    def _existing_run(self, run_id: str):
        from mlflow.exceptions import MlflowException
        try:
            return retry_locked(self.client.get_run, run_id)
        except MlflowException:
            return None

    # --- writes: straight through, or kept in order while the store is away ---------------

    def _do(self, op: dict) -> None:
        send_op(self.client, self.run_id, op)

    def _take_over(self, path: Path) -> None:
        """Send what a stopped process of this run kept in its backlog (points already in MLflow left out)."""
        header, ops = read_backlog(path)
        if header is not None and header["run_id"] != self.run_id:
            print(f"pgpong: note: {path} belongs to MLflow run {header['run_id']}, not {self.run_id}; left as is "
                  f"(python -m pgpong.tracking replay {path.parent})", file=sys.stderr, flush=True)
            return
        try:   # the status is this process's to set: the stopped one's "end" is left out
            sent, skipped = send_kept(self.client, self.run_id, ops, self._present, with_end=False)
        except Exception as e:
            raise PgpongError(f"{path}: the writes the stopped run kept could not be sent to {self.uri} "
                              f"({type(e).__name__}: {e}); the file is kept: resume again once the store answers"
                              ) from None
        path.unlink()
        print(f"pgpong: {sent} writes the stopped run kept in {path} sent ({skipped} metric points were there already)",
              file=sys.stderr, flush=True)

    def _submit(self, op: dict) -> None:
        if not self._backlog:
            try:
                self._do(op)
                return
            except Exception as e:
                if not is_unreachable(e):
                    raise
                self._retry_at = time.monotonic() + self.retry_every_s
                where = f"; kept in {self.backlog_path}" if self.backlog_path else " (kept in memory)"
                print(f"pgpong: tracking store {self.uri} failed ({type(e).__name__}); training goes on, "
                      f"writes are kept{where} and retried every {self.retry_every_s:.0f} s", file=sys.stderr, flush=True)
        self._backlog.append(op)
        if self.backlog_path:
            if not self.backlog_path.exists():
                _append(self.backlog_path, self._header())
            _append(self.backlog_path, op)
        self.replay()

    def replay(self, force: bool = False) -> bool:
        """Try the kept writes again (at most every retry_every_s unless forced); True when none is left."""
        if not self._backlog:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        n = len(self._backlog)
        while self._backlog:
            try:
                self._do(self._backlog[0])
            except Exception as e:
                if not is_unreachable(e):
                    raise
                self._retry_at = time.monotonic() + self.retry_every_s
                self._rewrite_backlog()
                return False
            self._backlog.pop(0)
        self._replayed += n
        if self.backlog_path:
            self.backlog_path.unlink(missing_ok=True)
        print(f"pgpong: tracking store {self.uri} answers again; {n} kept writes sent", file=sys.stderr, flush=True)
        try:
            self._do({"op": "tags", "tags": {"tracking_backlog_replayed": str(self._replayed)}})
        except Exception:
            pass
        return True

    def _header(self) -> dict:
        return {"op": "header", "uri": self.uri, "run_id": self.run_id, "resume_count": self.resume_count}

    def _rewrite_backlog(self) -> None:
        if self.backlog_path:
            lines = [self._header(), *self._backlog]
            _write_lines(self.backlog_path, lines)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param
        items = [Param(k, _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            retry_locked(self.client.log_batch, self.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])

    def set_tags(self, tags: dict) -> None:
        self._submit({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, metrics: dict, step: int, timestamp_ms: int | None = None) -> None:
        now, step = timestamp_ms or int(time.time() * 1000), int(step)
        for k, v in metrics.items():
            if step in self._present.get(k, ()):    # played again after a stop; MLflow has this point
                self.skipped += 1
            else:
                self._pending.append({"key": k, "value": float(v), "timestamp": now, "step": step})
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        t0 = time.monotonic()
        pending, self._pending = self._pending, []
        if pending:
            self._submit({"op": "metrics", "metrics": pending})
        else:
            self.replay()
        self._last_flush = time.monotonic()
        self.write_s += self._last_flush - t0

    def log_artifact(self, path, artifact_path: str | None = None) -> None:
        self._submit({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def audit(self, first_episode: int, episodes: int, first_update: int, updates: int) -> str:
        """'' when the run holds episode/* at every episode first_episode+1..episodes and train/* for every
        update first_update+1..updates, each exactly once; else one line saying what is missing or doubled.

        Writes still kept for a server that is away are not counted against the run (replay sends them),
        and a store that stops answering now gets no verdict either way.
        """
        self.flush()
        if self._backlog:
            return ""
        try:
            return self._audit(first_episode, episodes, first_update, updates)
        except Exception as e:
            if not is_unreachable(e):
                raise
            return ""

    def _audit(self, first_episode: int, episodes: int, first_update: int, updates: int) -> str:
        keys = set(retry_locked(self.client.get_run, self.run_id).data.metrics)
        if episodes > first_episode:
            keys.add("episode/reward")
        if updates > first_update:
            keys.add("train/update")

        def history(key):
            return retry_locked(self.client.get_metric_history, self.run_id, key)

        problems, update_steps = [], Counter()
        if "train/update" in keys:
            h = history("train/update")
            problems += _differences("train/update", Counter(int(m.value) for m in h),
                                     Counter(range(first_update + 1, updates + 1)), "update")
            update_steps = Counter({m.step: 1 for m in h})
        for key in sorted(keys):
            if key.startswith("episode/"):
                want = Counter(range(first_episode + 1, episodes + 1))
            elif key.startswith("train/") and key != "train/update":
                want = update_steps
            else:
                continue
            problems += _differences(key, Counter(m.step for m in history(key)), want, "episode")
        return "; ".join(problems)

    def time_to(self) -> dict | None:
        """The run's milestones (pgpong/tracking/milestones.py) from what MLflow holds, logged as
        time_to/<threshold>/{episodes,seconds,steps}; None while writes are kept for a store that is away."""
        self.flush()
        if self._backlog:
            return None
        try:
            start_ms = retry_locked(self.client.get_run, self.run_id).info.start_time
            points = {key: {m.step: m for m in retry_locked(self.client.get_metric_history, self.run_id, key)}
                      for key in ("episode/running_reward", "episode/length")}
        except Exception as e:
            if not is_unreachable(e):
                raise
            return None
        running, length = points["episode/running_reward"], points["episode/length"]
        episodes = sorted(running)
        crossed = milestones.crossings(
            episodes, [running[e].value for e in episodes],
            [(running[e].timestamp - start_ms) / 1000 for e in episodes],
            np.cumsum([length[e].value if e in length else 0 for e in episodes]))
        for t, hit in crossed.items():
            if hit is not None:
                self.log_metrics(milestones.as_metrics({t: hit}), step=hit[0])
        self.flush()
        return crossed

    def end(self, status: str = "FINISHED") -> None:
        if self.skipped:
            print(f"pgpong: {self.skipped} metric points of episodes played again after the stop were in MLflow "
                  f"already (logged before it); those are kept", file=sys.stderr, flush=True)
        try:
            self.flush()
        finally:
            self._submit({"op": "end", "status": status})
            if not self.replay(force=True):
                where = self.backlog_path or "memory (lost at exit)"
                print(f"pgpong: tracking store {self.uri} still unreachable: {len(self._backlog)} writes not sent, "
                      f"run {self.run_id} stays incomplete (RUNNING) there; they are in {where}; once the server "
                      f"is back: python -m pgpong.tracking replay {self.backlog_path or ''}", file=sys.stderr, flush=True)


def send_op(client, run_id: str, op: dict) -> None:
    """One kept write (a backlog line) sent to run_id."""
    from mlflow.entities import Metric, RunTag
    kind = op["op"]
    if kind == "metrics":
        ms = [Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in op["metrics"]]
        for i in range(0, len(ms), MAX_METRICS_PER_BATCH):
            retry_locked(client.log_batch, run_id, metrics=ms[i:i + MAX_METRICS_PER_BATCH])
    elif kind == "tags":
        retry_locked(client.log_batch, run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
    elif kind == "artifact":
        if Path(op["path"]).exists():
            client.log_artifact(run_id, op["path"], op.get("artifact_path"))
    elif kind == "end":
        retry_locked(client.set_terminated, run_id, op["status"])


def present_steps(client, run_id: str, keys) -> dict:
    """Per metric key, the steps run_id holds already."""
    return {k: {m.step for m in retry_locked(client.get_metric_history, run_id, k)} for k in keys}


def send_kept(client, run_id: str, ops: list, present: dict, with_end: bool = True) -> tuple[int, int]:
    """Send kept writes in order, leaving out metric points whose (key, step) is in `present` (updated
    with what is sent), and "end" unless with_end; (writes sent, points left out)."""
    sent = skipped = 0
    for op in ops:
        if op["op"] == "end" and not with_end:
            continue
        if op["op"] == "metrics":
            new = [m for m in op["metrics"] if m["step"] not in present.get(m["key"], ())]
            skipped += len(op["metrics"]) - len(new)
            if not new:
                continue
            op = {**op, "metrics": new}
        send_op(client, run_id, op)
        for m in op.get("metrics", ()):
            present.setdefault(m["key"], set()).add(m["step"])
        sent += 1
    return sent, skipped


def _differences(key: str, got: Counter, want: Counter, what: str) -> list[str]:
    """What `got` lacks of `want`, and what it holds more than once or unasked, as words."""
    missing, extra = sorted(want - got), sorted(got - want)
    return ([f"{key}: {what} {_ranges(missing)} missing"] if missing else []) + \
        ([f"{key}: {what} {_ranges(extra)} doubled or unexpected"] if extra else [])


def _ranges(xs: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    out, i = [], 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ", ".join(out)


def _append(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _write_lines(path: Path, objs: list) -> None:
    write_atomic(path, "".join(json.dumps(o) + "\n" for o in objs))


RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")


def _is_str_dict(d) -> bool:
    return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in d.items())


def _is_metric(m) -> bool:
    return (isinstance(m, dict) and isinstance(m.get("key"), str) and isinstance(m.get("value"), (int, float))
            and all(isinstance(m.get(k), int) and not isinstance(m.get(k), bool) for k in ("timestamp", "step")))


BACKLOG_OPS = {    # op -> (is it well formed, what it must hold)
    "metrics": (lambda o: isinstance(o.get("metrics"), list) and all(map(_is_metric, o["metrics"])),
                "metrics: a list of {key, value, timestamp, step}"),
    "tags": (lambda o: _is_str_dict(o.get("tags")), "tags: an object of strings"),
    "artifact": (lambda o: isinstance(o.get("path"), str) and isinstance(o.get("artifact_path"), (str, type(None))),
                 "path: a string, artifact_path: a string or null"),
    "end": (lambda o: o.get("status") in RUN_STATUSES, f"status: one of {', '.join(RUN_STATUSES)}"),
}


def read_backlog(path: Path) -> tuple[dict | None, list[dict]]:
    """A backlog file's header and writes, every line checked; a PgpongError naming the first bad one.

    A last line cut off mid-write (no newline, not JSON: the process died while appending it) is
    skipped with a note; its write is lost either way (the checkpoint does not cover it). (None, [])
    when the file holds no line at all.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise PgpongError(f"{path}: not a pgpong tracking backlog (binary data at byte {e.start})") from None
    lines = text.split("\n")
    objs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            if n == len(lines) and n > 1:     # the file does not end with a newline: a torn last write
                print(f"pgpong: {path}: line {n} was cut off mid-write; skipped", file=sys.stderr)
                break
            raise PgpongError(f"{path}: line {n}: not JSON ({e.msg}); not a pgpong tracking backlog") from None
        objs.append((n, obj))
    if not objs:
        return None, []
    if not isinstance(objs[0][1], dict) or objs[0][1].get("op") != "header":
        raise PgpongError(f"{path}: not a pgpong tracking backlog (line 1 must be its header)")
    header = objs[0][1]
    if not (isinstance(header.get("uri"), str) and "://" in header["uri"] and isinstance(header.get("run_id"), str)
            and header["run_id"]):
        raise PgpongError(f"{path}: line 1: the header needs a tracking uri and a run_id")
    for n, op in objs[1:]:
        kind = op.get("op") if isinstance(op, dict) else None
        if kind not in BACKLOG_OPS:
            raise PgpongError(f"{path}: line {n}: unknown write {kind!r}; expected one of {', '.join(BACKLOG_OPS)}")
        ok, needs = BACKLOG_OPS[kind]
        if not ok(op):
            raise PgpongError(f"{path}: line {n}: a malformed {kind} write (needs {needs})")
    return header, [op for _, op in objs[1:]]


def replay_backlog(path) -> int:
    """Send a backlog file's writes to the run it names, each metric point at most once; returns how many were sent.

    A run resumed since the backlog was written (higher resume_count) keeps its status: the
    backlog's "end" is left out.
    """
    path = Path(path)
    if path.is_dir():
        path = path / BACKLOG_NAME
    if not path.is_file():
        raise PgpongError(f"{path}: no tracking backlog here (nothing to replay)")
    header, ops = read_backlog(path)
    if header is None:
        path.unlink()
        return 0
    from mlflow.exceptions import MlflowException
    client, run_id = open_client(header["uri"], must_exist=True), header["run_id"]
    try:
        run = retry_locked(client.get_run, run_id)
    except MlflowException as e:
        raise PgpongError(f"{path}: its run {run_id} is not in {header['uri']} ({e.error_code}); nothing sent") from None
    later = int(run.data.tags.get("resume_count", "0")) > int(header.get("resume_count", 0))
    present = present_steps(client, run_id, {m["key"] for op in ops if op["op"] == "metrics" for m in op["metrics"]})
    try:
        sent, skipped = send_kept(client, run_id, ops, present, with_end=not later)
    except Exception as e:
        raise PgpongError(f"{path}: replay stopped ({_why(e)}); the file is kept: run the command "
                          f"again (what was sent is not sent twice)") from None
    send_op(client, run_id, {"op": "tags", "tags": {"tracking_backlog_replayed": str(sent)}})
    path.unlink()
    if skipped:
        print(f"pgpong: {skipped} metric points were in {header['uri']} already; left out", file=sys.stderr)
    return sent


def _why(e: BaseException) -> str:
    """A store's failure in a few words."""
    text = str(e).strip()
    return reason(e) or f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


class DeferredTracker:
    """A new run's MlflowTracker made in a background thread while training starts (importing
    MLflow and creating a store's tables take seconds a short run would otherwise wait for).

    Writes (params, tags, metrics, artifacts) are queued in order until it is ready, then sent
    through it in that order; whatever needs an answer (run_id, flush, audit, time_to, end) waits
    for it. A failure to make it (one line, as MlflowTracker says it) is raised at the next call.
    `when_ready(fn)` runs fn(tracker) in the caller's thread once it is ready.
    """
    resumed = False          # only a new run is deferred: a resumed one must know what MLflow holds first
    WRITES = ("log_params", "set_tags", "log_metrics", "log_artifact")
    # While MLflow loads (seconds of Python holding the GIL), the training thread waits for the GIL
    # after each emulator step: asked for it back within 0.1 ms (Python's default is 5 ms), a
    # 150-episode run took 32.8 and 32.7 s, against 34.3 and 33.3 s at 0.5 ms and 30.8 and 29.9 s
    # untracked (alternating rounds).
    SWITCH_INTERVAL_S = 1e-4

    def __init__(self, make):
        self._tracker, self._error, self._queue, self._hooks = None, None, [], []
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, self.SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._make, args=(make,), name="pgpong-tracker", daemon=True)
        self._thread.start()

    def _make(self, make) -> None:
        try:
            self._tracker = make()
        except BaseException as e:    # raised in the training thread at its next call
            self._error = e
        finally:
            sys.setswitchinterval(self._switch)

    def ready(self) -> MlflowTracker:
        self._thread.join()
        if self._error is not None:
            raise self._error
        queue, self._queue = self._queue, []
        for name, args, kwargs in queue:
            getattr(self._tracker, name)(*args, **kwargs)
        hooks, self._hooks = self._hooks, []
        for fn in hooks:
            fn(self._tracker)
        return self._tracker

    def when_ready(self, fn) -> None:
        self._hooks.append(fn)
        if not self._thread.is_alive():
            self.ready()

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self.WRITES:
            def write(*args, **kwargs):
                if self._thread.is_alive():
                    if name == "log_metrics":     # stamped now, not when it is sent
                        kwargs.setdefault("timestamp_ms", int(time.time() * 1000))
                    self._queue.append((name, args, kwargs))
                else:
                    getattr(self.ready(), name)(*args, **kwargs)
            return write
        return getattr(self.ready(), name)


def make_tracker(tracking_cfg, launch_dir, run_name: str, tags: dict, parent_run_id: str | None = None,
                 resume_run_id: str | None = None, out_dir=None, stopped_out_dir=None, defer: bool = False,
                 start_ms: int | None = None):
    """The tracker the config asks for; relative SQLite URIs resolve against launch_dir.

    resume_run_id: continue that run if this store has it (else a new run tagged resumed_from_run);
    out_dir: where writes are kept while the store is unreachable; stopped_out_dir (a training run
    continued after a stop): the stopped process's output folder, whose kept writes are sent first,
    and then no metric point MLflow holds for its (key, step) is sent again.
    start_ms: a new run's MLflow start time (default: now).
    defer: a new run on a SQLite file is made in the background (DeferredTracker) while training
    starts; a server is still asked first, so an unreachable one stops the run before it trains.
    """
    if tracking_cfg.backend == "none":
        return NullTracker()
    uri = resolve_sqlite_uri(tracking_cfg.uri, launch_dir, "tracking.uri")

    start_ms = start_ms or int(time.time() * 1000)    # a new run's start: now (or given), even if MLflow is ready later

    def make():
        return MlflowTracker(uri, tracking_cfg.experiment, run_name, tags, tracking_cfg.flush_every_s, parent_run_id,
                             resume_run_id, Path(out_dir) / BACKLOG_NAME if out_dir else None,
                             Path(stopped_out_dir) / BACKLOG_NAME if stopped_out_dir else None, start_ms)
    path = sqlite_path(uri)
    if defer and not resume_run_id and not stopped_out_dir and path is not None:
        check_store(uri)    # what fails at once without MLflow (a corrupt or read-only file, a missing folder): now
        return DeferredTracker(make)
    return make()


@entry_point
def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m pgpong.tracking", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("replay", help="send the writes kept while the tracking server was away")
    rp.add_argument("path", help=f"a run's output folder or its {BACKLOG_NAME}")
    n = replay_backlog(parser.parse_args(argv).path)
    print(f"pgpong: {n} kept writes sent", file=sys.stderr)
    return 0

