"""Every finished episode's metrics are in MLflow exactly once after hard kills and tracking outages, with resume.

Real training processes, real SIGKILL, a real `mlflow server` stopped and started again. Each
case ends with one MLflow run whose episode/* metrics hold every step 1..N once and whose
train/* metrics hold every update once, at the episode it happened.
"""
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pgpong.tracking.tracker import MlflowTracker
from pgpong.tracking.tracker import main as tracking_main
from tests.conftest import run_cli
from tests.test_tracking_server import QUICK_HTTP, Server

# two emulators, 100-step episodes (they end in pairs), an update every 3 episodes
ARGS = ["H=8", "batch_size=3", "env.num_envs=2", "env.max_episode_steps=100", "log_every_s=0.2"]
EPISODE_KEYS = ["episode/reward", "episode/running_reward", "episode/length", "time/steps_per_s"]
TRAIN_KEYS = ["train/grad_norm", "train/p_up_mean", "train/stale_step_fraction"]
CKPT_RE = re.compile(r"^ckpt-e(\d+)-s\d+\.npz$")


def start(args, cwd: Path, log: str, env=None) -> subprocess.Popen:
    """`python -m pgpong.run args` in cwd, its stderr into cwd/log (read when something fails)."""
    with open(cwd / log, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "pgpong.run", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=err, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def checkpoints(cwd: Path) -> list[int]:
    """Episodes of the complete checkpoint files under cwd/outputs, all processes together."""
    return sorted(int(m.group(1)) for p in cwd.glob("outputs/*/*/checkpoints/*") if (m := CKPT_RE.match(p.name)))


def wait_until(condition, proc: subprocess.Popen, what: str, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def kill9(proc: subprocess.Popen) -> bool:
    """SIGKILL; True if it was still running (it did not finish first)."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return True


def the_run(client: MlflowClient):
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run


def assert_every_metric_once(client: MlflowClient, run_id: str, episodes: int, batch_size: int = 3) -> None:
    """episode/* at every episode 1..episodes once; train/* at every update once, update u at episode u*batch_size."""
    history = {k: client.get_metric_history(run_id, k) for k in EPISODE_KEYS + TRAIN_KEYS + ["train/update"]}
    for key in EPISODE_KEYS:
        assert sorted(m.step for m in history[key]) == list(range(1, episodes + 1)), key
    updates = episodes // batch_size
    assert sorted((m.step, m.value) for m in history["train/update"]) == \
        [(u * batch_size, u) for u in range(1, updates + 1)]
    for key in TRAIN_KEYS:
        assert sorted(m.step for m in history[key]) == [u * batch_size for u in range(1, updates + 1)], key


def resume_to_the_end(run_id: str, cwd: Path, extra=(), env=None) -> subprocess.CompletedProcess:
    r = run_cli([f"resume={run_id}", *extra], cwd=cwd, timeout=180, env=env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "data loss" not in r.stderr
    return r


def test_a_hard_kill_after_a_checkpoint_then_resume_leaves_every_episode_once(tmp_path):
    # checkpoints every episode, metrics flushed every 10 s (the default): the kill lands after a
    # checkpoint that covers episodes whose metrics were still in memory
    n = 60
    proc = start(ARGS + [f"episodes={n}", "checkpoint_every=1"], tmp_path, "first.log")
    wait_until(lambda: any(e >= 10 for e in checkpoints(tmp_path)), proc, "checkpoint of episode 10")
    assert kill9(proc), "the run finished before the kill: nothing was tested"
    covered = max(checkpoints(tmp_path))
    assert covered < n
    # what a kill in the middle of an atomic write leaves (mkstemp's name beside the target)
    (out,) = tmp_path.glob("outputs/*/*")
    stale = [out / "checkpoints" / f"ckpt-e{covered + 2:08d}-s000000099999.npz.k1ll3d_x.tmp",
             out / "model.npz.k1ll3d_y.tmp"]
    for p in stale:
        p.write_bytes(b"PK\x03\x04 cut short")

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = the_run(client)
    r = resume_to_the_end(run.info.run_id, tmp_path)
    assert f"at episode {covered}" in r.stderr           # the newest complete checkpoint, not the temp file
    run = the_run(client)
    assert run.info.status == "FINISHED" and run.data.tags["resume_count"] == "1"
    assert "pgpong.data_loss" not in run.data.tags
    assert_every_metric_once(client, run.info.run_id, n)
    assert not any(p.exists() for p in stale) and not list(tmp_path.glob("outputs/**/*.tmp"))


def episodes_in(client: MlflowClient) -> int:
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return max((m.step for m in client.get_metric_history(runs[0].info.run_id, "episode/reward")), default=0) \
        if runs else 0


def kill9_when(proc: subprocess.Popen, condition, what: str, timeout=120) -> None:
    """SIGKILL at a moment `condition()` holds, checked with the process frozen (SIGSTOP) so it cannot move on."""
    deadline = time.monotonic() + timeout
    while True:
        wait_until(condition, proc, what, timeout=max(deadline - time.monotonic(), 1))
        proc.send_signal(signal.SIGSTOP)
        if condition():
            assert kill9(proc)
            return
        proc.send_signal(signal.SIGCONT)


def test_hard_kills_at_random_moments_each_followed_by_resume_leave_one_run_with_every_episode_once(tmp_path):
    # metrics flushed every 0.2 s, checkpoints every 12 episodes; three kills, each followed by resume=:
    # 1. while MLflow holds episodes past the newest checkpoint (the resumed run plays them again)
    # 2. in start-up, the run reopened but no checkpoint of that process yet (the next resume
    #    falls back to the checkpoint it started from)
    # 3. at a random moment
    n, rng = 150, random.Random(13)
    args = ARGS + [f"episodes={n}", "checkpoint_every=12", "tracking.flush_every_s=0.2"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    proc = start(args, tmp_path, "run0.log")
    kill9_when(proc, lambda: checkpoints(tmp_path) and episodes_in(client) > checkpoints(tmp_path)[-1],
               "episodes in MLflow past a checkpoint")
    assert max(checkpoints(tmp_path)) < episodes_in(client) < n
    run_id = the_run(client).info.run_id

    before = checkpoints(tmp_path)
    proc = start([f"resume={run_id}"], tmp_path, "run1.log")
    kill9_when(proc, lambda: "resumed from" in (tmp_path / "run1.log").read_text() and checkpoints(tmp_path) == before,
               "the resumed run's start, before its first checkpoint")
    assert checkpoints(tmp_path) == before

    proc = start([f"resume={run_id}"], tmp_path, "run2.log")
    time.sleep(rng.uniform(2.0, 8.0))
    kill9(proc)
    resume_to_the_end(run_id, tmp_path)
    run = the_run(client)
    # resume_count counts the processes that reopened the run: the second, perhaps the third, the last
    assert run.info.status == "FINISHED" and int(run.data.tags["resume_count"]) in (2, 3)
    assert "pgpong.data_loss" not in run.data.tags
    assert_every_metric_once(client, run_id, n)


def test_a_run_whose_store_lost_points_says_so_with_a_tag_and_one_line(tmp_path):
    # the store loses episodes 2-3 (as a restore from an older backup would); the run, continued
    # for 3 more episodes, ends with the loss named in a tag and one printed line
    r = run_cli(ARGS + ["episodes=6", "checkpoint_every=2"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = the_run(client).info.run_id
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        db.execute("DELETE FROM metrics WHERE run_uuid = ? AND step IN (2, 3)", (run_id,))
    r = run_cli([f"resume={run_id}", "episodes=9"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if "data loss" in x]
    assert line.startswith(f"pgpong: data loss: MLflow run {run_id}") and "episode/reward: episode 2-3 missing" in line
    run = the_run(client)
    assert "episode/reward: episode 2-3 missing" in run.data.tags["pgpong.data_loss"]
    assert "train/update: update 1 missing" in run.data.tags["pgpong.data_loss"]     # update 1 was at episode 3


def test_replaying_a_backlog_leaves_out_points_the_run_holds_and_twice_adds_nothing(tmp_path):
    # the case: the run holds episodes 1-7 and, resumed without the backlog, 16-20 played
    # again; the stopped process's backlog holds 8-20 (other values, other times) and its KILLED end
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MlflowTracker(uri, "durability", "r", {"resume_count": 1})
    for e in [*range(1, 8), *range(16, 21)]:
        tracker.log_metrics({"episode/reward": -1.0}, step=e)
    tracker.end("FINISHED")
    kept = [{"op": "header", "uri": uri, "run_id": tracker.run_id, "resume_count": 0},
            {"op": "metrics", "metrics": [{"key": "episode/reward", "value": 1.0, "timestamp": 1000 + e, "step": e}
                                          for e in range(8, 21)]},
            {"op": "end", "status": "KILLED"}]
    for i in range(2):
        (tmp_path / f"kept{i}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in kept))
        assert tracking_main(["replay", str(tmp_path / f"kept{i}.jsonl")]) == 0
    client = MlflowClient(uri)
    history = sorted((m.step, m.value) for m in client.get_metric_history(tracker.run_id, "episode/reward"))
    assert history == [(e, 1.0 if 8 <= e <= 15 else -1.0) for e in range(1, 21)]   # the first write of each kept
    assert client.get_run(tracker.run_id).info.status == "FINISHED"   # resumed since: its status is not the backlog's


@pytest.mark.slow
def test_a_tracking_outage_then_a_hard_kill_then_resume_and_replays_leave_every_episode_once(tmp_path, monkeypatch):
    # the server crashes mid-run (SIGKILL), the run goes on keeping its writes in its backlog and is
    # itself killed after a checkpoint that covers episodes only the backlog holds; the server comes back
    server = Server(tmp_path)
    server.start()
    n = 80
    proc = start(ARGS + [f"episodes={n}", "checkpoint_every=4", "tracking.flush_every_s=1",
                         f"tracking.uri={server.uri}"], tmp_path, "first.log", env=QUICK_HTTP)
    try:
        def on_server():
            runs = server.client().search_runs(["1"])
            steps = [m.step for m in server.client().get_metric_history(runs[0].info.run_id, "episode/reward")] \
                if runs else []
            return max(steps, default=0)
        wait_until(lambda: on_server() >= 2, proc, "episodes on the server")
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=30)
        sent = on_server()
        backlogs = lambda: list(tmp_path.glob("outputs/*/*/tracking-backlog.jsonl"))
        wait_until(lambda: backlogs() and checkpoints(tmp_path) and checkpoints(tmp_path)[-1] >= sent + 8, proc,
                   "a checkpoint past the outage")
        kept = shutil.copy(backlogs()[0], tmp_path / "kept.jsonl")
        assert kill9(proc), "the run finished before the kill: nothing was tested"
        (run,) = server.client().search_runs(["1"])
        server.start()
        r = resume_to_the_end(run.info.run_id, tmp_path, [f"tracking.uri={server.uri}", "checkpoint_every=1000"],
                              env=QUICK_HTTP)
        (run,) = server.client().search_runs(["1"])
        assert_every_metric_once(server.client(), run.info.run_id, n)
        assert run.info.status == "FINISHED" and run.data.tags["resume_count"] == "1"
        assert "pgpong.data_loss" not in run.data.tags
        assert "writes the stopped run kept" in r.stderr and not backlogs()
        for k, v in QUICK_HTTP.items():
            monkeypatch.setenv(k, v)
        for i in range(2):   # the stopped process's backlog sent again, twice: nothing doubled, the run still FINISHED
            again = shutil.copy(kept, tmp_path / f"again{i}.jsonl")      # a replay deletes the file it sent
            assert tracking_main(["replay", str(again)]) == 0        # `python -m pgpong.tracking replay`, in-process
        (run,) = server.client().search_runs(["1"])
        assert run.info.status == "FINISHED"
        assert_every_metric_once(server.client(), run.info.run_id, n)
    finally:
        kill9(proc)
        if server.proc.poll() is None:
            server.stop()
