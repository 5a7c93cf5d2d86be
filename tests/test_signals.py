"""SIGINT/SIGTERM on a real training process: checkpoint, KILLED run, resumable; a second Ctrl-C quits at once."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pgpong.engine import checkpoint

ARGS = ["H=8", "batch_size=3", "env.max_episode_steps=250", "checkpoint_every=1000", "seed=2",
        "tracking.flush_every_s=0.5", "log_every_s=0.2"]
# the default vector path (AtariVectorEnv, two emulators to keep it quick) and the gymnasium path
PATHS = {"vector": ["env.num_envs=2"], "gym": ["env.vector=false", "env.num_envs=1"]}


def start(args, cwd):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, "-m", "pgpong.run", *args], cwd=cwd, env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def wait_for_episode(proc, n, timeout=90):
    """Read stderr until the progress line for episode n (or later) shows; returns what was read."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("episode ") and int(line.split()[1].split("/")[0]) >= n:
            return seen
    raise AssertionError("training never reached episode %d:\n%s" % (n, "".join(seen)))


def only_run(cwd):
    runs = MlflowClient(f"sqlite:///{cwd}/mlflow.db").search_runs(["1"])
    assert len(runs) == 1
    return runs[0]


@pytest.mark.parametrize("path", ["vector", "gym"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_writes_a_checkpoint_marks_the_run_killed_and_exits_with_one_line(tmp_path, sig, path):
    proc = start(ARGS + PATHS[path] + ["episodes=100000"], tmp_path)
    wait_for_episode(proc, 2)
    t0 = time.monotonic()
    proc.send_signal(sig)
    rest = proc.stderr.read()
    proc.wait(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 128 + sig.value
    assert "Traceback" not in rest
    last = rest.strip().splitlines()[-1]
    assert last.startswith(f"pgpong: stopped by {sig.name} at episode ") and "resume=" in last
    run = only_run(tmp_path)
    assert run.info.status == "KILLED"
    episode = int(run.data.tags["stopped_at_episode"])
    assert episode >= 2 and run.data.tags["stop_signal"] == sig.name
    ckpt = run.data.tags["last_checkpoint"]
    _, meta = checkpoint.load(ckpt)
    assert meta["episode"] == episode and meta["mlflow_run_id"] == run.info.run_id
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "episode/reward")]
    assert steps == list(range(1, episode + 1))          # nothing logged was lost
    # what the stopped run reached is logged and printed (250-step episodes lose by a few points,
    # so the running reward starts above -10)
    running = sorted(client.get_metric_history(run.info.run_id, "episode/running_reward"), key=lambda m: m.step)
    first = next((m.step for m in running if m.value >= -10), None)
    assert first is not None and run.data.metrics.get("time_to/-10/episodes") == first
    assert f"pgpong: running reward -10 at episode {first} " in rest


def test_resuming_a_killed_run_by_its_id_continues_it_to_the_uninterrupted_result(tmp_path):
    proc = start(ARGS + PATHS["gym"] + ["episodes=8"], tmp_path)
    wait_for_episode(proc, 3)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    run = only_run(tmp_path)
    stopped = int(run.data.tags["stopped_at_episode"])
    assert stopped < 8, "the run finished before the signal: nothing was tested"
    r = subprocess.run([sys.executable, "-m", "pgpong.run", f"resume={run.info.run_id}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert r.returncode == 0, r.stderr
    run = only_run(tmp_path)                                  # the same run, continued
    assert run.info.status == "FINISHED" and run.data.tags["resume_count"] == "1"
    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(run.info.run_id, "episode/reward")
    assert [m.step for m in history] == list(range(1, 9))
    straight = subprocess.run([sys.executable, "-m", "pgpong.run", *ARGS, *PATHS["gym"], "episodes=8", "tracking=none"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert straight.returncode == 0, straight.stderr
    model_full = straight.stderr.strip().split("model ")[-1]
    model_resumed = r.stderr.strip().split("model ")[-1]
    full, resumed = checkpoint.load(model_full)[0], checkpoint.load(model_resumed)[0]
    for k in full:
        np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)


def test_resuming_a_killed_vector_run_by_its_id_finishes_the_same_run(tmp_path):
    # the vector path's emulators are not saved: the run goes on from the checkpoint's training
    # state with new episodes, in the same MLflow run, every episode logged once
    proc = start(ARGS + PATHS["vector"] + ["episodes=10"], tmp_path)
    wait_for_episode(proc, 2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    run = only_run(tmp_path)
    stopped = int(run.data.tags["stopped_at_episode"])
    assert 2 <= stopped < 10, "the run finished before the signal: nothing was tested"
    _, meta = checkpoint.load(run.data.tags["last_checkpoint"])
    assert meta["episode"] == stopped and meta["envs"] is None and meta["num_envs"] == 2
    r = subprocess.run([sys.executable, "-m", "pgpong.run", f"resume={run.info.run_id}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert r.returncode == 0, r.stderr
    assert f"at episode {stopped}" in r.stderr and "10 episodes" in r.stderr
    run = only_run(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["resume_count"] == "1"
    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(run.info.run_id, "episode/reward")
    assert [m.step for m in history] == list(range(1, 11))


def test_a_second_ctrl_c_quits_at_once_and_the_last_checkpoint_stays_loadable(tmp_path):
    # checkpoint every episode so that the second signal may well land during a write
    # (H=1000: ~77 MB per checkpoint, so the stop's own checkpoint takes a while to write)
    proc = start(ARGS + PATHS["vector"] + ["episodes=100000", "checkpoint_every=1", "H=1000", "tracking=none"],
                 tmp_path)
    wait_for_episode(proc, 2)
    proc.send_signal(signal.SIGINT)
    assert "finishing the current step" in proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    rest = proc.communicate(timeout=10)[1]
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 130 and "Traceback" not in rest
    assert "again: quitting at once" in rest
    folders = list(tmp_path.glob("outputs/*/*/checkpoints"))
    arrays, meta = checkpoint.load(checkpoint.latest(folders[0]))
    assert meta["episode"] >= 1 and arrays["param.W1"].shape[1] == 1000
