"""Real clusters on this machine for tests: a one-node Slurm cluster and a local Ray head.

    from tests.clusters import slurm_cluster, ray_cluster    # pytest fixtures (session scope)

Slurm comes from Debian's packages (.ci/run installs them when missing): munge authenticates,
MariaDB holds the accounting database that slurmdbd serves (submitit reads job states with
`sacct`), slurmctld schedules and slurmd runs the jobs on node `localhost` with this machine's
CPUs. Everything is generated under a fresh /tmp folder (slurm.conf, keys, state, spool, logs),
listens on free loopback ports, and is stopped at the end of the session. Clients find the
cluster through SLURM_CONF. A requeued job waits for its old credential to expire before it runs
again: cred_expire=10 s instead of Slurm's 120 keeps the requeue test short. munge clients and Slurm's accounting connection use munge's default
socket, so a munged already answering there is used as it is; otherwise one is started there.

Ray: `ray start --head --block` on 127.0.0.1 with 2 CPUs and no dashboard, stopped by ending
its process group. Its workers import pgpong from this checkout (PYTHONPATH).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
SLURM_BINARIES = ("munged", "mungekey", "munge", "slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "scontrol",
                  "mariadbd", "mariadb-install-db")


@dataclass
class Cluster:
    env: dict                       # environment a client of the cluster needs (SLURM_CONF, ...)
    root: Path                      # its generated files and logs
    info: dict = field(default_factory=dict)

    def run(self, *cmd, check=True) -> str:
        """A client command (sinfo, squeue, scancel, scontrol, sacct, ray ...) against this cluster."""
        r = subprocess.run(list(cmd), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60)
        if check and r.returncode:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout


def _start(cmd, log: Path, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True, **kw)


def _stop(proc: subprocess.Popen | None, timeout_s: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


def _munge_answers() -> bool:
    r = subprocess.run(["munge", "-n", "-S", str(MUNGE_SOCKET)], capture_output=True, timeout=10)
    return r.returncode == 0


def _wait(what: str, ok, timeout_s: float, logs=()) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
            raise TimeoutError(f"{what} not ready after {timeout_s} s\n{tails}")
        time.sleep(0.3)


def _node_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    return max(500, total_kb // 1024 - 1024)     # leave 1 GB to the system


SLURM_CONF = """\
ClusterName=pgpong
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
KillWait=10
MinJobAge=5
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

SLURMDBD_CONF = """\
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
LogFile={root}/log/slurmdbd.log
PidFile={root}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct
"""


def _kill_pidfile(path: Path, timeout_s: float = 20) -> None:
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node Slurm cluster (partition `debug`, node `localhost`) with accounting; yields a Cluster."""
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm cluster binaries missing: {', '.join(missing)}; `apt-get install slurm-wlm slurmdbd "
                    f"munge mariadb-server` (.ci/run does it)")
    if os.geteuid() != 0:
        pytest.skip("a one-node Slurm cluster needs root (slurmd starts jobs as their user)")
    root = Path(tempfile.mkdtemp(prefix="pgpong-slurm-"))
    for d in ("state", "spool", "log", "munge", "db"):
        (root / d).mkdir()
    log = root / "log"
    ports = {"ctld_port": free_port(), "slurmd_port": free_port(), "dbd_port": free_port(), "db_port": free_port()}
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(root=root, cpus=os.cpu_count() or 1, memory_mb=_node_memory_mb(), **ports))
    (root / "slurmdbd.conf").write_text(SLURMDBD_CONF.format(root=root, **ports))   # beside slurm.conf
    (root / "slurmdbd.conf").chmod(0o600)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    own_munged = mariadb = None
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, timeout=120)
    try:
        if not (MUNGE_SOCKET.exists() and _munge_answers()):
            key = root / "munge" / "munge.key"
            run("mungekey", "--create", "--keyfile", str(key))
            MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
            run("munged", "--force", f"--socket={MUNGE_SOCKET}", f"--key-file={key}",
                f"--log-file={log}/munged.log", f"--pid-file={root}/munge/munged.pid",
                f"--seed-file={root}/munge/munged.seed")
            own_munged = root / "munge" / "munged.pid"
            _wait("munged", _munge_answers, 30, [log / "munged.log"])
        run("mariadb-install-db", "--no-defaults", f"--datadir={root}/db", "--user=root",
            "--auth-root-authentication-method=normal", "--skip-test-db")
        mariadb = _start(["mariadbd", "--no-defaults", f"--datadir={root}/db", f"--socket={root}/mysql.sock",
                          f"--port={ports['db_port']}", "--bind-address=127.0.0.1", "--user=root",
                          "--innodb-buffer-pool-size=32M", f"--pid-file={root}/mariadb.pid"], log / "mariadb.log")
        wait_for_port(ports["db_port"], 60, mariadb)
        run("slurmdbd")
        wait_for_port(ports["dbd_port"], 60)
        run("slurmctld", "-i")
        wait_for_port(ports["ctld_port"], 60)
        run("slurmd", "-N", "localhost")
        cluster = Cluster(env={"SLURM_CONF": str(conf)}, root=root, info={"partition": "debug"})
        _wait("node localhost idle", lambda: "idle" in cluster.run("sinfo", "-h", "-o", "%T", check=False), 60,
              [log / "slurmctld.log", log / "slurmd.log"])
        _wait("accounting", lambda: "pgpong" in cluster.run("sacctmgr", "-n", "show", "cluster", "format=cluster",
                                                              check=False), 60, [log / "slurmdbd.log"])
        yield cluster
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"Slurm cluster did not start: {e.cmd}: {e.stderr}") from None
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=60)
        for pidfile in ("slurmd.pid", "slurmctld.pid", "slurmdbd.pid"):
            _kill_pidfile(root / pidfile)
        _stop(mariadb)
        if own_munged is not None:
            _kill_pidfile(own_munged)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs; yields a Cluster whose info['address'] is host:port."""
    ray_cli = shutil.which("ray", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if ray_cli is None:
        pytest.skip("Ray is not installed; `pip install -e '.[cluster]'` (.ci/run does it)")
    root = Path(tempfile.mkdtemp(prefix="pgpong-ray-"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "RAY_USAGE_STATS_ENABLED": "0"}
    head = _start([ray_cli, "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=false",
                   "--node-ip-address=127.0.0.1", f"--port={port}", f"--temp-dir={root}", "--disable-usage-stats"],
                  root / "head.log", env=env)
    address = f"127.0.0.1:{port}"
    cluster = Cluster(env={"RAY_ADDRESS": address}, root=root, info={"address": address})
    try:
        wait_for_port(port, 120, head)
        _wait("ray head", lambda: "CPU" in cluster.run(ray_cli, "status", f"--address={address}", check=False),
              120, [root / "head.log"])
        yield cluster
    finally:
        _stop(head, timeout_s=5)    # `ray start --block` outlives SIGTERM: its group is then killed
        shutil.rmtree(root, ignore_errors=True)
