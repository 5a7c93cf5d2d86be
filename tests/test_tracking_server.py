"""A real `mlflow server` that is missing at start, or goes away mid-run and comes back."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli

TINY = ["H=8", "batch_size=2", "env.max_episode_steps=60", "log_every_s=0.1", "tracking.flush_every_s=0.3",
        "env.num_envs=2"]
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3", "PYTHONWARNINGS": "ignore"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on a loopback port with a SQLite store in tmp_path; stop() and start() again."""

    def __init__(self, tmp_path):
        self.dir, self.port, self.proc = tmp_path, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            ["mlflow", "server", "--backend-store-uri", f"sqlite:///{self.dir}/server.db", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"], cwd=self.dir, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.uri + "/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        raise AssertionError("mlflow server did not start")

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)

    def client(self):
        return MlflowClient(f"sqlite:///{self.dir}/server.db")   # read the store directly


class Lines:
    """A training process whose stderr is drained in the background (a full pipe would block it)."""

    def __init__(self, args, cwd):
        self.proc = subprocess.Popen([sys.executable, "-m", "pgpong.run", *args], cwd=cwd, text=True,
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env=dict(os.environ, **QUICK_HTTP))
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")), daemon=True).start()

    def wait_for(self, text, timeout=60):
        """Index of the first line containing text (or, if text is callable, for which it is true)."""
        seen = text if callable(text) else (lambda line: text in line)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self.lines):
                if seen(line):
                    return i
            if self.proc.poll() is not None and not any(seen(line) for line in self.lines):
                break
            time.sleep(0.1)
        raise AssertionError(f"never saw {text!r}:\n" + "".join(self.lines))

    def wait_for_episode(self, n, timeout=60):
        """Index of the first progress line at episode n or later (envs finish episodes together)."""
        return self.wait_for(lambda line: line.startswith("episode ") and int(line.split()[1].split("/")[0]) >= n,
                             timeout)

    def episodes_after(self, index):
        return [line for line in self.lines[index:] if line.startswith("episode ")]


def test_an_unreachable_tracking_server_is_a_clear_error_before_training(tmp_path):
    port = free_port()                  # bound then closed: nothing listens there
    r = run_cli(TINY + [f"tracking.uri=http://127.0.0.1:{port}"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"error: tracking.uri=http://127.0.0.1:{port}: the MLflow tracking server does not answer" in r.stderr
    assert "episode " not in r.stderr and not list(tmp_path.glob("outputs/*/*/checkpoints"))


@pytest.mark.slow
def test_losing_the_server_mid_run_keeps_training_and_replays_every_metric_when_it_is_back(tmp_path):
    server = Server(tmp_path)
    server.start()
    run = Lines(TINY + ["episodes=100000", f"tracking.uri={server.uri}"], tmp_path)
    try:
        run.wait_for_episode(3)
        server.stop()
        lost = run.wait_for("training goes on")
        assert "tracking-backlog.jsonl" in run.lines[lost]
        time.sleep(2)
        assert len(run.episodes_after(lost)) >= 3            # training went on without the server
        assert list(tmp_path.glob("outputs/*/*/tracking-backlog.jsonl"))
        server.start()
        run.wait_for("answers again")
        run.proc.send_signal(signal.SIGINT)
        run.proc.wait(timeout=60)
        assert run.proc.returncode == 130
        (r,) = server.client().search_runs(["1"]) or [None]
        assert r.info.status == "KILLED" and int(r.data.tags["tracking_backlog_replayed"]) >= 1
        n = int(r.data.tags["stopped_at_episode"])
        steps = [m.step for m in server.client().get_metric_history(r.info.run_id, "episode/reward")]
        assert steps == list(range(1, n + 1))
        assert not list(tmp_path.glob("outputs/*/*/tracking-backlog.jsonl"))
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        if server.proc.poll() is None:
            server.stop()


@pytest.mark.slow
def test_a_server_still_away_at_the_end_leaves_the_run_incomplete_until_the_replay_command(tmp_path):
    server = Server(tmp_path)
    server.start()
    run = Lines(TINY + ["episodes=40", f"tracking.uri={server.uri}"], tmp_path)
    try:
        run.wait_for_episode(1)
        server.stop()
        run.proc.wait(timeout=120)
        text = "".join(run.lines)
        assert run.proc.returncode == 0, text
        assert "still unreachable" in text and "stays incomplete (RUNNING)" in text
        assert "python -m pgpong.tracking replay" in text
        (r,) = server.client().search_runs(["1"])
        assert r.info.status == "RUNNING"                      # incomplete, visibly
        (out,) = tmp_path.glob("outputs/*/*")
        server.start()
        rep = run_cli(["replay", str(out)], cwd=tmp_path, module="pgpong.tracking", env=QUICK_HTTP)
        assert rep.returncode == 0, rep.stderr
        (r,) = server.client().search_runs(["1"])
        assert r.info.status == "FINISHED"
        steps = [m.step for m in server.client().get_metric_history(r.info.run_id, "episode/reward")]
        assert steps == list(range(1, 41))
        assert not (out / "tracking-backlog.jsonl").exists()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        if server.proc.poll() is None:
            server.stop()
