"""Two sweep workers share one study through a real PostgreSQL server and one real MLflow server."""
import os
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.servers import mlflow_server, postgres_server  # noqa: F401  (pytest fixtures)

TINY_TRIAL = ["env.max_episode_steps=60", "H=8", "batch_size=1", "checkpoint_every=100"]

SPEC = """\
episodes: 2
report_every: 1
seeds: [0]
objective: {kind: final}
sampler: {name: random}
pruner: {name: none}
params:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  crop: {type: categorical, choices: [karpathy, fix]}
"""


@pytest.mark.slow
def test_two_workers_on_postgres_and_mlflow_server_share_one_study(tmp_path, postgres_server, mlflow_server):
    n_trials, study = 6, "dist"
    (tmp_path / "spec.yaml").write_text(SPEC)
    args = [sys.executable, "-m", "pgpong.sweep", "sweep=spec.yaml", f"n_trials={n_trials}",
            f"storage={postgres_server}", f"study={study}", f"tracking.uri={mlflow_server}", *TINY_TRIAL]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    workers = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env) for _ in range(2)]
    outs = [w.communicate(timeout=300) for w in workers]
    for w, (out, err) in zip(workers, outs):
        assert w.returncode == 0, err[-3000:]

    # Optuna's view: exactly n_trials trained trials numbered 0..n-1, all finished
    s = optuna.load_study(study_name=study, storage=postgres_server)
    trials = [t for t in s.get_trials() if not t.user_attrs.get("surplus")]
    surplus = [t for t in s.get_trials() if t.user_attrs.get("surplus")]
    assert sorted(t.number for t in trials) == list(range(n_trials))
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert len(surplus) <= 1           # a count/ask race costs at most one empty slot per extra worker
    assert len({t.user_attrs["worker"] for t in trials}) == 2, \
        f"both workers should have run trials: {[(t.number, t.user_attrs['worker']) for t in trials]}"

    # MLflow's view: one study parent run, one nested run per trial, matching Optuna's record
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("pgpong")
    parents = client.search_runs([exp.experiment_id], f"tags.pgpong_kind = 'study' and tags.optuna_study = '{study}'")
    assert len(parents) == 1, f"workers disagreed on the study's parent run: {[r.info.run_id for r in parents]}"
    runs = client.search_runs([exp.experiment_id], f"tags.pgpong_kind = 'trial' and tags.optuna_study = '{study}'")
    by_number = {int(r.data.tags["optuna_trial"]): r for r in runs}
    assert len(runs) == n_trials and sorted(by_number) == list(range(n_trials))
    for t in trials:
        r = by_number[t.number]
        assert r.info.run_id == t.user_attrs["mlflow_run_id"]
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.data.tags["state"] == t.state.name and r.info.status == "FINISHED"
        assert float(r.data.params["lr"]) == pytest.approx(t.params["lr"])
        assert r.data.metrics["trial/objective"] == pytest.approx(t.value)
