"""Training runs as data: read from MLflow or from a runs folder, written as one CSV and one JSON per run.

A runs folder holds, per run:
    <run_id>.csv    one row per episode: episode, reward, running_reward, length, seconds, steps
    <run_id>.json   what produced the run: params (the groups' keys, env.resolved.* with library
                    versions), git commit, Hydra overrides, seed, status, start/end time, source
`seconds` is wall-clock time since the run started (from MLflow metric timestamps), `steps` the
agent steps of all finished episodes so far (cumulative episode length). Values are rounded as
written (running reward to 3 decimals, seconds to 0.1 s), and runs read from MLflow are rounded
the same way, so a report from MLflow and a report from its exported folder are the same.
"""
import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pgpong.errors import PgpongError
from pgpong.tracking.naming import NOT_IN_NAME

RUNNING = "episode/running_reward"
REWARD = "episode/reward"
LENGTH = "episode/length"
SPEED = "time/steps_per_s"
COLUMNS = ("episode", "reward", "running_reward", "length", "seconds", "steps")
FORMATS = {"episode": "{:.0f}", "reward": "{:g}", "running_reward": "{:.3f}", "length": "{:.0f}",
           "seconds": "{:.1f}", "steps": "{:.0f}"}


@dataclass
class Run:
    run_id: str
    name: str
    status: str
    params: dict                 # every param the run logged, as strings
    tags: dict                   # git_commit, hydra_overrides, seed, sweep ids (no mlflow.* internals)
    curve: dict                  # column -> (episodes,) array; nan where the run did not log it
    start_time: str = ""         # ISO 8601 UTC
    end_time: str = ""
    experiment: str = ""
    source: str = ""             # the MLflow store or folder it was read from
    experiment_id: str = field(default="", repr=False)    # only for runs read from MLflow

    @property
    def seed(self) -> str:
        return self.params.get("seed", self.tags.get("seed", "?"))

    @property
    def commit(self) -> str:
        return self.tags.get("git_commit", "unknown")

    @property
    def overrides(self) -> dict:
        """`crop=fix seed=1 episodes=500` -> {'crop': 'fix', 'episodes': '500'} (no seed, no tracking)."""
        out = {}
        for o in (self.tags.get("hydra_overrides") or "").split():
            key, eq, value = o.lstrip("+~").partition("=")
            if eq and key != "seed" and key.split(".")[0].split("/")[0] not in NOT_IN_NAME:
                out[key] = value
        return out

    def has(self, column: str) -> bool:
        return column in self.curve and not np.isnan(self.curve[column]).all()

    @property
    def episodes(self) -> int:
        return int(self.curve["episode"][-1])


def rounded(curve: dict) -> dict:
    """The curve at the precision a runs folder keeps."""
    out = {}
    for c in COLUMNS:
        v = np.asarray(curve.get(c, np.full(len(curve["episode"]), np.nan)), float)
        out[c] = np.round(v, {"reward": 3, "running_reward": 3, "seconds": 1}.get(c, 0))
    return out


# ---------------------------------------------------------------- MLflow

def history(client, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, values, timestamps_ms) of one metric, sorted by step (last write wins on ties)."""
    points = client.get_metric_history(run_id, key)
    if not points:
        return np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64)
    arr = np.array([(m.step, m.value, m.timestamp) for m in points], dtype=float)
    arr = arr[np.lexsort((arr[:, 2], arr[:, 0]))]
    arr = arr[np.r_[arr[1:, 0] != arr[:-1, 0], True]]
    return arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2].astype(np.int64)


def _iso(ms) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds") if ms else ""


def from_mlflow(client, run, source: str, experiment: str = "") -> Run:
    """A training run's curve and provenance; PgpongError when it has no running-reward metric."""
    rid, name = run.info.run_id, run.info.run_name or run.info.run_id
    episode, running, ts = history(client, rid, RUNNING)
    if episode.size == 0:
        raise PgpongError(f"run {rid} ({name}): no {RUNNING} metric, so it is not comparable; "
                          "select pgpong training runs only")
    start = run.info.start_time or int(ts[0])

    def aligned(key):
        s, v, _ = history(client, rid, key)
        out = np.full(episode.size, np.nan)
        if s.size:
            idx = np.minimum(np.searchsorted(s, episode), s.size - 1)
            ok = s[idx] == episode
            out[ok] = v[idx[ok]]
        return out

    length = aligned(LENGTH)
    steps = np.cumsum(length)                  # nan from the first episode without a length on
    curve = {"episode": episode.astype(float), "reward": aligned(REWARD), "running_reward": running,
             "length": length, "seconds": (ts - start) / 1000.0, "steps": steps}
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    if "mlflow.parentRunId" in run.data.tags:
        tags["parent_run_id"] = run.data.tags["mlflow.parentRunId"]
    return Run(run_id=rid, name=name, status=run.info.status, params=dict(run.data.params), tags=tags,
               curve=rounded(curve), start_time=_iso(run.info.start_time), end_time=_iso(run.info.end_time),
               experiment=experiment, source=source, experiment_id=run.info.experiment_id)


# ---------------------------------------------------------------- runs folders

def curve_csv(run: Run) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    cols = [run.curve[c] for c in COLUMNS]
    for i in range(len(cols[0])):
        w.writerow(["" if np.isnan(col[i]) else FORMATS[c].format(col[i]) for c, col in zip(COLUMNS, cols)])
    return buf.getvalue()


def meta_json(run: Run) -> str:
    meta = {"run_id": run.run_id, "name": run.name, "status": run.status, "experiment": run.experiment,
            "source": run.source, "start_time": run.start_time, "end_time": run.end_time,
            "git_commit": run.commit, "seed": run.seed, "hydra_overrides": run.tags.get("hydra_overrides", ""),
            "params": dict(sorted(run.params.items())), "tags": dict(sorted(run.tags.items()))}
    return json.dumps(meta, indent=1) + "\n"


def write_runs(runs: list[Run], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in runs:
        (folder / f"{r.run_id}.csv").write_text(curve_csv(r))
        (folder / f"{r.run_id}.json").write_text(meta_json(r))


def _read_curve(path: Path) -> dict:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0][:1]) != ("episode",) or "running_reward" not in rows[0]:
        raise PgpongError(f"{path}: not a runs CSV (the header must start with episode and name running_reward)")
    head, body = rows[0], rows[1:]
    if not body:
        raise PgpongError(f"{path}: no episodes")
    curve = {}
    for j, c in enumerate(head):
        if c in COLUMNS:
            try:
                curve[c] = np.array([float(row[j]) if j < len(row) and row[j] != "" else np.nan for row in body])
            except ValueError:
                raise PgpongError(f"{path}: column {c} holds a value that is not a number") from None
    if np.isnan(curve["episode"]).any() or np.isnan(curve["running_reward"]).any():
        raise PgpongError(f"{path}: every row needs an episode and a running_reward")
    return rounded(curve)


def read_runs(folder: Path, spelled: str) -> list[Run]:
    """Every run of a runs folder (or of a report folder's runs/)."""
    if (folder / "runs").is_dir():
        folder = folder / "runs"
    if not folder.is_dir():
        raise PgpongError(f"from={spelled}: no such folder")
    runs = []
    for meta_path in sorted(folder.glob("*.json")):
        csv_path = meta_path.with_suffix(".csv")
        try:
            meta = json.loads(meta_path.read_text())
            params, tags = meta["params"], meta.get("tags", {})
            if not isinstance(params, dict) or not isinstance(tags, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise PgpongError(f"{meta_path}: not a run's JSON (needs an object with run_id and params)") from None
        if not csv_path.is_file():
            raise PgpongError(f"{meta_path}: no {csv_path.name} beside it")
        runs.append(Run(run_id=str(meta.get("run_id", meta_path.stem)), name=str(meta.get("name", meta_path.stem)),
                        status=str(meta.get("status", "?")), params={k: str(v) for k, v in params.items()},
                        tags={k: str(v) for k, v in tags.items()}, curve=_read_curve(csv_path),
                        start_time=str(meta.get("start_time", "")), end_time=str(meta.get("end_time", "")),
                        experiment=str(meta.get("experiment", "")), source=str(meta.get("source", ""))))
    if not runs:
        raise PgpongError(f"from={spelled}: no runs in {folder} (expected <run_id>.json and <run_id>.csv)")
    return runs


def merge(runs: list[Run]) -> list[Run]:
    """One run per run id: the copy with the most episodes (the first of equals)."""
    best: dict[str, Run] = {}
    for r in runs:
        if r.run_id not in best or r.episodes > best[r.run_id].episodes:
            best[r.run_id] = r
    return list(best.values())
