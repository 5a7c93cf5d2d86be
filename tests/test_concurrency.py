"""Two real processes writing one SQLite MLflow store (and one Optuna SQLite storage) at once."""
import logging
import os
import subprocess
import sys

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

TINY = ["H=8", "batch_size=2", "env.max_episode_steps=60", "episodes=6", "tracking.flush_every_s=0"]


def popen(args, cwd, **env):
    return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONWARNINGS="ignore", **env))


@pytest.mark.parametrize("cache", ["fresh", "unwritable"])
def test_two_runs_started_at_once_on_one_fresh_mlflow_db_both_finish_complete(tmp_path, cache):
    # fresh: both make the schema template at once, then copy it; unwritable: no template, both
    # would run MLflow's migrations on one file (the init lock makes them take turns)
    (tmp_path / "a_file").write_text("")
    cache_dir = tmp_path / "cache" if cache == "fresh" else tmp_path / "a_file" / "cache"
    # flush_every_s=0: every episode is its own write, so the two processes contend all the time
    procs = [popen(["-m", "pgpong.run", *TINY, f"seed={s}"], tmp_path, PGPONG_CACHE_DIR=str(cache_dir))
             for s in (1, 2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.data.tags["seed"] for r in runs) == ["1", "2"]
    for r in runs:
        assert r.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(r.info.run_id, "episode/reward")] == list(range(1, 7))
        assert r.data.params["H"] == "8"
    assert [p.name for p in cache_dir.glob("*")] == (["mlflow-%s-schema.db" % mlflow.__version__]
                                                     if cache == "fresh" else [])


def test_checking_a_new_sqlite_store_creates_nothing_and_refuses_a_missing_folder_in_one_line(tmp_path):
    from pgpong.errors import PgpongError
    from pgpong.tracking import store
    db = tmp_path / "mlflow.db"
    store.check_store(f"sqlite:///{db}")                  # what a run checks before it trains
    assert not db.exists()                                # MLflow makes it, from the template, later
    with pytest.raises(PgpongError, match=r"^tracking store sqlite:///.*/missing/mlflow.db: cannot open it"):
        store.check_store(f"sqlite:///{tmp_path}/missing/mlflow.db")


def test_a_new_store_copied_from_the_schema_template_reads_as_one_mlflow_made(tmp_path, monkeypatch):
    import sqlite3

    from pgpong.tracking import store
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("PGPONG_CACHE_DIR", str(tmp_path / "a_file" / "cache"))      # no template: MLflow's own
    own = store.open_client(f"sqlite:///{tmp_path}/own.db")
    monkeypatch.setenv("PGPONG_CACHE_DIR", str(tmp_path / "cache"))
    store.open_client(f"sqlite:///{tmp_path}/first.db")                               # makes the template
    template = tmp_path / "cache" / f"mlflow-{mlflow.__version__}-schema.db"
    made = []                                   # MLflow says when it makes a store's tables itself
    handler = logging.Handler()
    handler.emit = lambda record: made.append(record.getMessage())
    logging.getLogger("mlflow.store.db.utils").addHandler(handler)
    try:
        copied = store.open_client(f"sqlite:///{tmp_path}/copied.db")
    finally:
        logging.getLogger("mlflow.store.db.utils").removeHandler(handler)
    assert not [m for m in made if "Creating initial MLflow database tables" in m]
    describe = lambda client: [(e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage)
                               for e in client.search_experiments()]
    assert describe(copied) == describe(own) and describe(own)[0][1] == "Default"
    # each table's definition as a set of lines: MLflow's own migrations order CHECK constraints
    # differently from one process to the next (string hashing)
    schema = lambda db: sorted((kind, name, sorted(ln.strip().rstrip(",") for ln in (sql or "").splitlines()))
                               for kind, name, sql in sqlite3.connect(db).execute(
                                   "SELECT type, name, sql FROM sqlite_master"))
    assert schema(tmp_path / "copied.db") == schema(tmp_path / "own.db")
    version = lambda db: sqlite3.connect(db).execute("SELECT version_num FROM alembic_version").fetchall()
    assert version(tmp_path / "copied.db") == version(tmp_path / "own.db")
    run = copied.create_run(copied.create_experiment("e"))
    copied.log_metric(run.info.run_id, "m", 1.0)
    assert copied.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    # a damaged template is made again, never copied
    template.write_bytes(b"not a database")
    store.open_client(f"sqlite:///{tmp_path}/after.db")
    assert describe(store.open_client(f"sqlite:///{tmp_path}/after.db")) == describe(own)
    assert store._is_schema(template)


OPTUNA_WORKER = """
import sys, optuna
from pgpong.tracking.store import first_use_lock
from pgpong.tracking.tracker import retry_locked
optuna.logging.set_verbosity(optuna.logging.WARNING)
with first_use_lock(sys.argv[1]):   # creating the tables of a fresh storage from two processes races
    study = retry_locked(optuna.create_study, study_name="s", storage=sys.argv[1], load_if_exists=True,
                         direction="maximize")
study.optimize(lambda t: -(t.suggest_float("x", -1, 1) ** 2), n_trials=15)
"""


def test_two_optuna_workers_started_at_once_on_one_fresh_sqlite_storage_both_finish(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    procs = [popen(["-c", OPTUNA_WORKER, storage], tmp_path) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert len(trials) == 30 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
