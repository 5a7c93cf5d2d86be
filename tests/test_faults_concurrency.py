"""Commands started together on a fresh folder: the first use of its SQLite stores (MLflow's schema
migration, Optuna's tables) is safe for every entry point, tested with real processes."""
import os
import subprocess
import sys
import time

import optuna
from mlflow.tracking import MlflowClient

TRIAL = ["episodes=1", "env.max_episode_steps=60", "batch_size=1", "env.num_envs=2"]
RUN_ID = "0123456789abcdef0123456789abcdef"


def start(module: str, args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{proc.args[1:4]} still running after {timeout} s:\n{proc.communicate()[1][-3000:]}")
    return proc.returncode, err


def test_two_sweeps_started_together_in_an_empty_folder_share_one_study_and_one_parent_run(tmp_path):
    args = ["sweep=lr_h", "n_trials=2", *TRIAL]
    procs = [start("pgpong.sweep", args, tmp_path) for _ in range(2)]
    for p in procs:
        code, err = finish(p)
        assert code == 0 and "Traceback" not in err, err[-3000:]
    trials = optuna.load_study(study_name="lr_h", storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("pgpong_kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["optuna_trial"] for r in runs if r.data.tags.get("pgpong_kind") == "trial") == ["0", "1"]


def test_run_and_sweep_started_together_with_report_and_play_opening_the_store_while_it_is_made(tmp_path):
    run = start("pgpong.run", [*TRIAL, "H=8"], tmp_path)
    sweep = start("pgpong.sweep", ["sweep=lr_h", "n_trials=1", *TRIAL], tmp_path)
    deadline = time.monotonic() + 120
    while not (tmp_path / "mlflow.db").exists():      # the first of the two has begun creating the store
        assert time.monotonic() < deadline and run.poll() is None and sweep.poll() is None
        time.sleep(0.01)
    readers = {"pgpong.report": start("pgpong.report", [f"runs={RUN_ID}"], tmp_path),
               "pgpong.play": start("pgpong.play", [f"run_id={RUN_ID}"], tmp_path)}
    for module, p in readers.items():     # they wait for the store's tables, then find no such run
        code, err = finish(p)
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-3000:]
        assert f"{RUN_ID}" in err and "error: " in err, err
    for p in (run, sweep):
        code, err = finish(p)
        assert code == 0 and "Traceback" not in err, err[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    kinds = sorted(r.data.tags.get("pgpong_kind", "run") for r in runs)
    assert kinds == ["run", "study", "trial"] and {r.info.status for r in runs} == {"FINISHED"}
