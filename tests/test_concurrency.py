"""Two real processes writing one SQLite MLflow store (and one Optuna SQLite storage) at once."""
import os
import subprocess
import sys

import optuna
from mlflow.tracking import MlflowClient

TINY = ["H=8", "batch_size=2", "env.max_episode_steps=60", "episodes=6", "tracking.flush_every_s=0"]


def popen(args, cwd):
    return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))


def test_two_runs_started_at_once_on_one_fresh_mlflow_db_both_finish_complete(tmp_path):
    # flush_every_s=0: every episode is its own write, so the two processes contend all the time
    procs = [popen(["-m", "pgpong.run", *TINY, f"seed={s}"], tmp_path) for s in (1, 2)]
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
