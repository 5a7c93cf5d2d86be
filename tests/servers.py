"""Real servers on loopback for tests: a PostgreSQL cluster and an `mlflow server` process.

    from tests.servers import postgres_server, mlflow_server   # pytest fixtures (session scope)
    with mlflow_server_on(Path("store")) as uri: ...             # on store/mlflow.db
    with optuna_dashboard("sqlite:///optuna.db") as url: ...    # optuna-dashboard's own CLI

PostgreSQL comes from Debian's `postgresql` package (.ci/run installs it when missing); initdb
refuses to run as root, so as root the cluster is made and started as the `postgres` user.
Each server gets a fresh data directory under /tmp and a free loopback port, and is stopped
at the end of the session.
"""
import glob
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl (Debian keeps them under /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return Path(d)
    return None


def _as_postgres_user() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as a non-root user."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL (initdb refuses root)")
    return [runuser, "-u", "postgres", "--"]


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


@pytest.fixture(scope="session")
def postgres_server():
    """postgresql://postgres@127.0.0.1:PORT/pgpong on a throw-away cluster (trust auth, loopback only)."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                    "`apt-get install postgresql` (.ci/run does it)")
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="pgpong-pg-"))
    data, log = root / "data", root / "server.log"
    if prefix:
        shutil.chown(root, user="postgres")
    port = free_port()
    run = lambda *cmd: subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True, timeout=120)
    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50")
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "pgpong")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {e.cmd}: {e.stderr}") from None
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/pgpong"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server_on(root: Path):
    """http://127.0.0.1:PORT of an `mlflow server` on root/mlflow.db (SQLite), artifacts in root/artifacts."""
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, 120, proc)
        wait_for_http(uri + "/health", 60, proc)
        yield uri
    except Exception:
        log.flush()
        print((root / "server.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="session")
def mlflow_server():
    """http://127.0.0.1:PORT of an `mlflow server` with a SQLite backend and artifacts under /tmp."""
    root = Path(tempfile.mkdtemp(prefix="pgpong-mlflow-"))
    try:
        with mlflow_server_on(root) as uri:
            yield uri
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """End a server started in its own session, and everything it forked."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    """Until url answers 200 (the server exiting first is an error)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def optuna_dashboard(storage: str):
    """http://127.0.0.1:PORT of `optuna-dashboard STORAGE` (the console script pip installed)."""
    script = Path(sysconfig.get_path("scripts")) / "optuna-dashboard"
    cmd = [str(script)] if script.exists() else [shutil.which("optuna-dashboard") or "optuna-dashboard"]
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([*cmd, storage, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/api/studies", 60, proc)
        yield url
    except Exception:
        log.seek(0)
        print(log.read()[-3000:], file=sys.stderr)
        raise
    finally:
        _stop(proc)
        log.close()
