"""Faults of the machine met by every command, for real: each ends in one line, soon, files intact.

Unreachable tracking servers (a closed port; a socket that accepts and never answers), Ctrl-C and
SIGTERM at moments of start-up, read-only and corrupt mlflow.db files, folders nobody can write
(a read-only bind mount in a private mount namespace: chmod does not stop root), and garbage
tracking backlogs.
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY, run_cli
from tests.servers import free_port

QUICK = [*TINY[:-1], "env.max_episode_steps=60", "env.num_envs=2"]    # where a run is expected to stop early
ANSWER_S = 15          # the most any command may take to give up, or to answer a signal
RUN_ID = "0123456789abcdef0123456789abcdef"


def start(module: str, args, cwd, prefix=()) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([*prefix, sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args[1:4]} still running after {timeout} s:\n{err[-3000:]}") from None
    return proc.returncode, out, err


def own_lines(err: str) -> list[str]:
    """stderr without progress: the emulator's banner, play's games, MLflow's notes on a fresh store."""
    return [line for line in err.splitlines()
            if line.strip() and not line.startswith(("A.L.E:", "[Powered by Stella]", "episode ", "pgpong play: "))
            and "INFO mlflow" not in line]


def assert_one_line(code: int, err: str, starts: str, contains: str = "", exit_code: int = 2) -> str:
    lines = own_lines(err)
    assert "Traceback" not in err and len(lines) == 1, err[-3000:]
    assert code == exit_code and lines[0].startswith(starts) and contains in lines[0], (code, lines[0])
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run in root/mlflow.db, its model logged."""
    root = tmp_path_factory.mktemp("store")
    r = run_cli(TINY, cwd=root)
    assert r.returncode == 0, r.stderr
    return {"root": root, "db": root / "mlflow.db", "run_id": re.search(r"MLflow run ([0-9a-f]{32})", r.stderr).group(1)}


# ---- an unreachable tracking server ---------------------------------------------------------

@pytest.fixture
def silent_port():
    """A port that accepts connections and never says a word (a hung server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def backlog_for(folder: Path, uri: str, run_id: str = RUN_ID, extra=()) -> Path:
    lines = [{"op": "header", "uri": uri, "run_id": run_id},
             {"op": "metrics", "metrics": [{"key": "episode/reward", "value": -1.0, "timestamp": 1, "step": 1}]},
             *extra]
    path = folder / "tracking-backlog.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("server", ["closed port", "silent socket"])
def test_report_play_and_replay_give_up_on_an_unreachable_server_within_seconds(tmp_path, server, request):
    port = free_port() if server == "closed port" else request.getfixturevalue("silent_port")
    uri = f"http://127.0.0.1:{port}"
    backlog = backlog_for(tmp_path, uri)
    kept = backlog.read_text()
    commands = {"pgpong.report": ["experiment=pgpong", f"tracking.uri={uri}"],
                "pgpong.play": [f"run_id={RUN_ID}", f"tracking.uri={uri}"],
                "pgpong.tracking": ["replay", backlog]}
    t0 = time.monotonic()
    procs = {m: start(m, args, tmp_path) for m, args in commands.items()}     # together: one wait, not three
    for module, proc in procs.items():
        code, _, err = finish(proc, timeout=120)
        assert time.monotonic() - t0 < ANSWER_S, f"{module} took {time.monotonic() - t0:.0f} s"
        assert_one_line(code, err, f"error: tracking.uri={uri}: the MLflow tracking server does not answer")
    assert backlog.read_text() == kept and not (tmp_path / "mlflow.db").exists()


# ---- Ctrl-C and SIGTERM during start-up ------------------------------------------------------

def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has a handler of its own for sig (bit sig-1 of SigCgt)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(re.search(r"^SigCgt:\s*([0-9a-f]+)", text, re.M).group(1), 16)
    return bool(mask >> (sig - 1) & 1)


def wait_until(condition, proc, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited before the moment came: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the moment never came"
        time.sleep(0.01)


BIG_START = ["env.num_envs=64", "episodes=1", "H=8", "tracking=none"]   # 64 emulators: seconds to build


def first_moment(proc, cwd):
    """As soon as pgpong has a handler of its own (before that, the interpreter is still starting)."""
    wait_until(lambda: catches(proc.pid, signal.SIGTERM), proc)


def one_second_in(proc, cwd):
    time.sleep(1.0)


def job_begun(proc, cwd):
    """Hydra has written the job's config: pgpong.run's own code is about to run."""
    wait_until(lambda: any(cwd.glob("outputs/*/*/.hydra/config.yaml")), proc)


def building_emulators(proc, cwd):
    job_begun(proc, cwd)
    time.sleep(0.5)


MOMENTS = [(first_moment, signal.SIGINT), (one_second_in, signal.SIGINT), (job_begun, signal.SIGTERM),
           (building_emulators, signal.SIGINT)]


@pytest.mark.parametrize("moment,sig", MOMENTS, ids=[m.__name__ for m, _ in MOMENTS])
def test_a_signal_at_any_moment_of_a_big_start_up_is_one_line_and_a_prompt_exit(tmp_path, moment, sig):
    proc = start("pgpong.run", BIG_START, tmp_path)
    moment(proc, tmp_path)
    assert proc.poll() is None, "start-up ended before the moment came"
    proc.send_signal(sig)
    t0 = time.monotonic()
    code, _, err = finish(proc)
    assert time.monotonic() - t0 < ANSWER_S
    line = assert_one_line(code, err, f"pgpong: stopped by {sig.name}", exit_code=128 + sig)
    if moment is first_moment:      # still loading modules: pgpong answers before its own code runs
        assert line.endswith("during start-up")
    assert not list(tmp_path.glob("outputs/*/*/checkpoints/*")), "a start-up has nothing to checkpoint"


@pytest.mark.parametrize("module,args", [
    ("pgpong.sweep", ["sweep=lr_h", "n_trials=1", "tracking=none"]),
    ("pgpong.report", ["experiment=pgpong"]),
    ("pgpong.play", [f"run_id={RUN_ID}"]),
])
def test_the_other_commands_answer_ctrl_c_while_they_load_with_one_line(tmp_path, module, args):
    proc = start(module, args, tmp_path)
    first_moment(proc, tmp_path)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=ANSWER_S)
    assert_one_line(code, err, "pgpong: stopped by SIGINT during start-up", exit_code=130)


def test_replay_waiting_on_a_silent_server_answers_ctrl_c_with_one_line(tmp_path, silent_port):
    backlog = backlog_for(tmp_path, f"http://127.0.0.1:{silent_port}")
    kept = backlog.read_text()
    proc = start("pgpong.tracking", ["replay", backlog], tmp_path)
    first_moment(proc, tmp_path)
    time.sleep(1.0)        # in the wait for the server's answer
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc, timeout=ANSWER_S)
    assert_one_line(code, err, "pgpong: stopped by SIGINT", exit_code=130)
    assert backlog.read_text() == kept


# ---- read-only and corrupt stores ------------------------------------------------------------

def read_only(path: Path, cwd: Path) -> list[str]:
    """A command prefix that runs the command in cwd with path mounted read-only, in a private mount
    namespace (nothing outside the command sees it; even root cannot write there)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && cd "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(path), str(cwd)]


@pytest.fixture(scope="module")
def can_mount_read_only(tmp_path_factory):
    d = tmp_path_factory.mktemp("ro")
    r = subprocess.run([*read_only(d, d), "sh", "-c", "touch x"], capture_output=True, text=True)
    if shutil.which("unshare") is None or "Read-only file system" not in r.stderr:
        pytest.skip(f"cannot make a read-only bind mount here (needs unshare and CAP_SYS_ADMIN): {r.stderr.strip()}")


def test_a_read_only_mlflow_db_is_one_line_for_run_sweep_play_and_report(trained, tmp_path, can_mount_read_only):
    db, before = trained["db"], digest(trained["db"])
    ro = read_only(db, tmp_path)
    uri = f"tracking.uri=sqlite:///{db}"
    procs = {"pgpong.run": start("pgpong.run", [*QUICK, uri], tmp_path, ro),
             "pgpong.sweep": start("pgpong.sweep", ["sweep=lr_h", "n_trials=1", "episodes=1", uri], tmp_path, ro),
             "pgpong.play": start("pgpong.play", [f"run_id={trained['run_id']}", "episodes=1",
                                                  "env.max_episode_steps=30", uri], tmp_path, ro),
             "pgpong.report": start("pgpong.report", [f"runs={trained['run_id']}", uri], tmp_path, ro)}
    for module, proc in procs.items():
        code, _, err = finish(proc)
        line = assert_one_line(code, err, "error: ", f"tracking store sqlite:///{db}: read-only")
        if module == "pgpong.play":
            assert "1 games played" in line and "not logged" in line
    assert digest(db) == before
    assert not list(tmp_path.glob("outputs/*/*/checkpoints/*"))     # nothing trained without its record
    assert not (tmp_path / "optuna.db").exists()        # the sweep stopped before its study storage


def test_a_corrupt_mlflow_db_is_one_line_for_every_command_and_stays_as_it_was(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_bytes(os.urandom(40_000))
    before = digest(db)
    (tmp_path / "out").mkdir()
    backlog = backlog_for(tmp_path / "out", f"sqlite:///{db}")
    commands = {"pgpong.run": QUICK, "pgpong.sweep": ["sweep=lr_h", "n_trials=1", "episodes=1"],
                "pgpong.report": ["experiment=pgpong"], "pgpong.play": [f"run_id={RUN_ID}"],
                "pgpong.tracking": ["replay", backlog]}
    procs = {m: start(m, args, tmp_path) for m, args in commands.items()}
    for proc in procs.values():
        code, _, err = finish(proc)
        assert_one_line(code, err, "error: ", f"tracking store sqlite:///{db}: not an SQLite database")
    assert digest(db) == before and backlog.exists()
    assert not (tmp_path / "optuna.db").exists()        # the sweep stopped before its study storage


# ---- folders nobody can write ----------------------------------------------------------------

def test_an_unwritable_launch_or_output_folder_is_one_line(trained, tmp_path, can_mount_read_only):
    launch, outputs_only = tmp_path / "launch", tmp_path / "outputs_only"
    (outputs_only / "outputs").mkdir(parents=True)
    launch.mkdir()
    store = f"tracking.uri=sqlite:///{trained['db']}"
    procs = {   # name -> (process, what the line must name)
        "run": (start("pgpong.run", QUICK, launch, read_only(launch, launch)), f"{launch}"),
        "run, outputs elsewhere": (start("pgpong.run", [*QUICK, f"hydra.run.dir={tmp_path}/elsewhere"], launch,
                                         read_only(launch, launch)),
                                   f"tracking store sqlite:///{launch}/mlflow.db: cannot open it"),
        "run, outputs/ read-only": (start("pgpong.run", QUICK, outputs_only, read_only(outputs_only / "outputs",
                                                                                     outputs_only)), "outputs"),
        "sweep": (start("pgpong.sweep", ["sweep=lr_h", "n_trials=1", "episodes=1"], launch,
                        read_only(launch, launch)), f"{launch}"),
        "report": (start("pgpong.report", [f"runs={trained['run_id']}", store], launch,
                         read_only(launch, launch)), f"{launch}/reports: Read-only file system"),
        "play video": (start("pgpong.play", [f"run_id={trained['run_id']}", "video=true", store], launch,
                             read_only(launch, launch)), f"{launch}/videos: Read-only file system"),
    }
    for name, (proc, names) in procs.items():
        code, _, err = finish(proc)
        assert_one_line(code, err, "error: ", names)
    assert not any(launch.iterdir()) and os.listdir(outputs_only / "outputs") == []


# ---- garbage backlogs ------------------------------------------------------------------------

@pytest.mark.parametrize("content,says", [
    (bytes(range(256)) * 8, "not a pgpong tracking backlog (binary data"),
    (b"hello\nworld\n", "line 1: not JSON"),
    (b'{"op": "header", "uri": "sqlite:///x.db", "run_id": "r"}\n{"op": "metrics", "metrics": 3}\n',
     "line 2: a malformed metrics write"),
    (b'{"op": "header", "uri": "sqlite:///x.db", "run_id": "r"}\n{"op": "drop tables"}\n', "line 2: unknown write"),
    (b'{"op": "header", "uri": "sqlite:///x.db", "run_id": "r"}\n{"op": "tags", "ta\n{"op": "end"}\n',
     "line 2: not JSON"),
], ids=["binary", "not JSON", "malformed write", "unknown write", "broken line inside"])
def test_a_garbage_backlog_is_one_line_and_left_as_it_was(tmp_path, content, says):
    path = tmp_path / "tracking-backlog.jsonl"
    path.write_bytes(content)
    r = run_cli(["replay", str(tmp_path)], cwd=tmp_path, module="pgpong.tracking", timeout=60)
    assert_one_line(r.returncode, r.stderr, f"error: {path}: ", says)
    assert path.read_bytes() == content and not (tmp_path / "x.db").exists()


def test_a_backlog_whose_last_line_was_cut_mid_write_replays_the_rest(trained, tmp_path):
    uri = f"sqlite:///{trained['db']}"
    metric = {"op": "metrics", "metrics": [{"key": "replayed/x", "value": 7.0, "timestamp": 1, "step": 3}]}
    path = backlog_for(tmp_path, uri, trained["run_id"], [metric])
    path.write_text(path.read_text() + '{"op": "metrics", "metrics": [{"key": "replayed/x", "va')
    r = run_cli(["replay", str(path)], cwd=tmp_path, module="pgpong.tracking", timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    # the run holds episode 1's reward already: only the new point is sent (exactly once)
    assert "line 4 was cut off mid-write; skipped" in r.stderr and "pgpong: 1 kept writes sent" in r.stderr
    history = MlflowClient(uri).get_metric_history(trained["run_id"], "replayed/x")
    assert [(m.value, m.step) for m in history] == [(7.0, 3)] and not path.exists()
