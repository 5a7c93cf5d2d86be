"""Opening a tracking store (MLflow) or a study storage (Optuna): fail fast, one line, safe first use.

    client = open_client(uri)                     # an MlflowClient whose store answers, takes writes, has its tables
    client = open_client(uri, must_exist=True, writes=False)    # for reading: a missing SQLite file is an error
    with first_use_lock(url): optuna.storages.RDBStorage(url)
    with faults(uri): client.create_run(...)      # a database that refuses is one line naming it
    check_store(uri)                              # before making files: answers, takes writes (if it exists)

Every command opens its stores through here, so each one:
- gives up within TIMEOUT_S on an HTTP tracking server that does not answer /health, and on a
  database server that accepts no connection (MLflow itself retries both for minutes); later
  requests time out in seconds too (TIMEOUT_DEFAULTS);
- creates or migrates a fresh SQLite file one process at a time: the first open holds an
  exclusive lock on `<file>.init.lock` (two processes migrating one file at once fail);
- says in one line, naming the store, that a database is corrupt, read-only or missing.

A new SQLite store starts as a copy of an empty one (MLflow's tables, no experiment) made once per
MLflow version in the user's cache (`schema_template`): making the tables runs every schema
migration, 1.5 s of CPU that a short run would otherwise spend beside its emulators.
"""
import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from pgpong.errors import PgpongError, fault
from pgpong.files import atomic_path

TIMEOUT_S = 5           # seconds an HTTP tracking server gets to answer /health
LOCK_WAIT_S = 120       # seconds to wait for another process creating or migrating the same SQLite file
TIMEOUT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
                 "PGCONNECT_TIMEOUT": "10"}
SERVER_DATABASES = ("postgresql", "mysql")    # SQLAlchemy URLs of database servers (their drivers take connect_timeout)
SQLITE_REASONS = {      # SQLite's words -> what they mean for the user
    "file is not a database": "not an SQLite database (corrupt, or another kind of file)",
    "database disk image is malformed": "corrupt (database disk image is malformed)",
    "attempt to write a readonly database": "read-only (the file, its folder or its file system refuses writes)",
    "unable to open database file": "cannot open it (its folder is missing, or not writable for its journal)",
    "database or disk is full": "the disk is full",
}


def fail_fast() -> None:
    """Short network timeouts for this process (unless the user set them), and no traceback walls
    logged by MLflow for database errors it raises anyway (the caller says them in one line)."""
    for key, value in TIMEOUT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _NoTracebacks) for f in logger.filters):
        logger.addFilter(_NoTracebacks())


class _NoTracebacks(logging.Filter):
    def filter(self, record) -> bool:
        return record.exc_info is None


def sqlite_path(uri: str) -> Path | None:
    """The file of a sqlite:////abs/path URI (relative ones are resolved by paths.resolve_sqlite_uri first)."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):].split("?", 1)[0]) if uri.startswith(prefix) and len(uri) > len(prefix) else None


def check_reachable(uri: str, key: str = "tracking.uri", timeout_s: float = TIMEOUT_S) -> None:
    """Fail early, with the URI in the message, when the server behind it does not answer: an HTTP
    tracking server's /health, or one connection to a database server (MLflow would retry for minutes)."""
    if uri.startswith(("http://", "https://")):
        import requests
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout_s).raise_for_status()
        except requests.RequestException as e:
            raise PgpongError(f"{key}={uri}: the MLflow tracking server does not answer "
                              f"({type(e).__name__}); start it or use {key}=sqlite:///mlflow.db") from None
    elif uri.startswith(SERVER_DATABASES):
        from sqlalchemy import create_engine, make_url
        from sqlalchemy.pool import NullPool
        shown = make_url(uri).render_as_string(hide_password=True)
        try:
            engine = create_engine(uri, poolclass=NullPool, connect_args={"connect_timeout": int(timeout_s)})
            with engine.connect():
                pass
            engine.dispose()
        except Exception as e:   # host down, nothing listening, wrong password, driver missing
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PgpongError(f"{key}={shown}: the database server does not answer ({why})") from None


@contextlib.contextmanager
def first_use_lock(uri: str, wait_s: float = LOCK_WAIT_S):
    """Hold an exclusive file lock beside a SQLite store while it is created or migrated.

    Two processes opening one fresh mlflow.db (or Optuna storage) at once both run the schema
    migrations and one fails ("duplicate column", "Online migration expected to match one row").
    Other URIs, and a folder nobody can write (where no store can be created either): no lock.
    """
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    try:
        f = open(path.with_name(path.name + ".init.lock"), "a")
    except OSError:
        yield
        return
    with f:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PgpongError(f"{uri}: another process has been creating or migrating this database "
                                      f"for over {wait_s:.0f} s (it holds {f.name}); let it finish or stop it") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def reason(e: BaseException) -> str | None:
    """What a database or file fault means, in a few words; None when e is not one (a bug)."""
    line = fault(e)
    while line is None and e is not None:   # a database server's refusal: SQLAlchemy's OperationalError
        if type(e).__name__ == "OperationalError":
            line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        e = e.__cause__
    if line is None:
        return None
    return next((words for said, words in SQLITE_REASONS.items() if said in line), line.removeprefix("database: "))


@contextlib.contextmanager
def faults(uri: str):
    """A store that cannot be read or written becomes a PgpongError naming it; anything else passes."""
    try:
        yield
    except PgpongError:
        raise
    except Exception as e:
        why = reason(e)
        if why is None:
            raise
        raise PgpongError(f"tracking store {uri}: {why}") from None


def check_store(uri: str) -> None:
    """What can be checked without creating anything: the server answers; an existing SQLite file is
    a database that takes writes, a new one's folder exists and takes writes (a command checks this
    before it makes files of its own)."""
    check_reachable(uri)
    path = sqlite_path(uri)
    if path is None:
        return
    if path.exists():
        with faults(uri):
            probe_sqlite(path, create=False, writes=True)
    elif not (path.parent.is_dir() and os.access(path.parent, os.W_OK)):
        raise PgpongError(f"tracking store {uri}: {SQLITE_REASONS['unable to open database file']}")


def open_client(uri: str, must_exist: bool = False, writes: bool = True):
    """An MlflowClient on a resolved URI whose store answers and has its tables (created if new).

    must_exist: a missing SQLite file is an error, not a new empty store (commands that read runs).
    writes: a SQLite file or folder that refuses writes fails now, before any work (commands that write).
    """
    fail_fast()
    check_reachable(uri)
    path = sqlite_path(uri)
    if must_exist and path is not None and not path.is_file():
        raise PgpongError(f"tracking.uri={uri}: no such MLflow database ({path}); run from the directory "
                          "you trained in or pass tracking.uri=sqlite:////abs/path/mlflow.db")
    from mlflow.tracking import MlflowClient
    with faults(uri), first_use_lock(uri):
        if path is not None:
            if not must_exist and path.parent.is_dir() and (not path.exists() or path.stat().st_size == 0):
                start_from_template(path)        # new, or empty (to SQLite, an empty database)
            probe_sqlite(path, create=not must_exist, writes=writes)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)     # the first query creates or migrates the tables
    return client


def probe_sqlite(path: Path, create: bool, writes: bool) -> None:
    """Open a SQLite file once, plainly: a file that is not a database, or a folder that refuses a new
    one, fails here at once with SQLite's own words (MLflow would retry opening it for minutes)."""
    import sqlite3
    con = sqlite3.connect(f"{path.as_uri()}?mode={'rwc' if create else 'ro'}", uri=True)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        con.close()
    # SQLite opens a file it cannot write read-only and says so at the first write; its journal
    # goes beside it, so the folder must take writes too
    if writes and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        raise sqlite3.OperationalError("attempt to write a readonly database")


def cache_dir() -> Path:
    """pgpong's folder in the user's cache: $PGPONG_CACHE_DIR, else $XDG_CACHE_HOME/pgpong, else ~/.cache/pgpong."""
    if os.environ.get("PGPONG_CACHE_DIR"):
        return Path(os.environ["PGPONG_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pgpong"


def schema_template() -> Path | None:
    """An empty MLflow store of the installed MLflow version: its tables (all migrations run) and
    no experiment, so MLflow makes the Default one, with its artifact folder, where the copy is
    opened. Made once in `cache_dir()`; None when the cache cannot be written."""
    import mlflow
    path = cache_dir() / f"mlflow-{mlflow.__version__}-schema.db"
    if _is_schema(path):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
            db = Path(tmp) / "schema.db"
            SqlAlchemyStore(f"sqlite:///{db}", (Path(tmp) / "artifacts").as_uri()).engine.dispose()
            with contextlib.closing(sqlite3.connect(db)) as con:
                con.execute("DELETE FROM experiments")
                con.commit()
            os.replace(db, path)        # atomic: a process making it at the same time replaces it whole
    except (OSError, sqlite3.Error):
        return None
    return path


def _is_schema(path: Path) -> bool:
    """Whether path is an SQLite file with MLflow's schema version and no experiment."""
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as con:
            con.execute("SELECT version_num FROM alembic_version").fetchone()
            return con.execute("SELECT count(*) FROM experiments").fetchone()[0] == 0
    except sqlite3.Error:
        return False


def start_from_template(path: Path) -> None:
    """A new SQLite store at path, copied from `schema_template()` (nothing when there is none, or
    when the folder refuses the copy: MLflow then makes the tables, or says why it cannot)."""
    template = schema_template()
    if template is None:
        return
    try:
        with atomic_path(path) as tmp:
            shutil.copy(template, tmp)              # its bytes and mode (as MLflow would make the file)
    except OSError:
        pass
