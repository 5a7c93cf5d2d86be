"""The Optuna driver: specs checked before anything starts, real trials, pruning, resuming."""
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pgpong import config
from pgpong.sweep.spec import Curve, SpecError, load_spec, objective_value, time_to_value
from pgpong.sweep.study import main
from tests.conftest import compose_cfg, run_cli
from tests.servers import free_port

TINY_TRIAL = ["H=8", "batch_size=1", "checkpoint_every=100"]

# Episode length as a parameter: 240-step episodes lose points, 60-step ones cannot, so the
# median pruner has something real to prune.
SPEC = """\
episodes: 3
report_every: 1
objective: {kind: final}
sampler: {name: random, seed: 1}
pruner: {name: median, n_startup_trials: 1}
params:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  baseline: {type: categorical, choices: [standardize, mean]}
  env.max_episode_steps: {type: categorical, choices: [60, 240]}
"""


def write(tmp_path, text, name="spec.yaml"):
    (tmp_path / name).write_text(text)
    return name


def sweep(tmp_path, monkeypatch, *args) -> int:
    monkeypatch.chdir(tmp_path)
    return main(list(args))


# ---- objectives and specs (pure) ------------------------------------------------------------

def test_objectives_read_the_running_reward_curve():
    curve = [-21.0, -20.0, -19.0, -18.0]
    assert objective_value(curve, "final", 100) == -18.0
    assert objective_value(curve, "last_k", 2) == -18.5
    assert objective_value(curve, "auc", 100) == -19.5


def test_time_to_is_the_cost_at_the_first_pass_and_censored_runs_rank_after_every_pass():
    running, cost = [-21.0, -12.0, -9.5, -11.0], [10, 20, 30, 40]
    assert time_to_value(running, cost, -10) == 30                # first episode above -10
    assert time_to_value(running, cost, -12) == 30                # strictly above: -12 itself does not pass
    # censored at a final running reward of -11 against a threshold of 0: 40 x (1 + 11/21)
    assert time_to_value(running, cost, 0) == pytest.approx(40 * (1 + 11 / 21))
    assert time_to_value([-21.0], [5], 0) == 10                   # nowhere near: twice the budget
    assert time_to_value([-0.5], [5], 0) > time_to_value([-21, -21, -21, 0.5], [1, 2, 3, 4], 0)
    curve = Curve()
    for r, n, t in [(-21, 100, 1.5), (-20, 120, 2.0), (-19, 90, 3.25)]:
        curve.add(r, n, t)
    assert curve.cost("episodes") == [1, 2, 3] and curve.cost("steps") == [100, 220, 310]
    assert curve.cost("seconds") == [1.5, 2.0, 3.25]


@pytest.mark.parametrize("text, key", [
    ("episodes: 3\nparams: {lr: {type: float, low: 0.01, high: 0.001}}\n", "params.lr: empty range"),
    ("episodes: 3\nobjective: {kind: time_to}\nparams: {H: {type: int, low: 8, high: 9}}\n",
     "direction: maximize: kind time_to counts a cost"),
    ("episodes: 3\ndirection: minimize\nobjective: {kind: time_to, threshold: 21}\nparams: {H: {type: int, low: 8, high: 9}}\n",
     "objective.threshold: 21"),
    ("episodes: 3\ndirection: minimize\nobjective: {kind: time_to, measure: hours}\nparams: {H: {type: int, low: 8, high: 9}}\n",
     "objective.measure: 'hours'"),
    ("episodes: 3\nobjective: {kind: final, threshold: 0}\nparams: {H: {type: int, low: 8, high: 9}}\n",
     "objective.threshold: only for kind: time_to"),
    ("episodes: 3\nparams: {H: {type: int, low: 8, high: 8}}\n", "params.H: empty range"),
    ("episodes: 3\nparams: {crop: {type: categorical, choices: []}}\n", "params.crop.choices"),
    ("episodes: 3\nparams: {lr: {type: float, low: 0, high: 1, log: true}}\n", "params.lr.low"),
    ("episodes: 3\nepisode: 4\nparams: {lr: {type: float, low: 0.1, high: 1}}\n", "episode: unknown key"),
    ("episodes: 3\nparams: {lr: {type: float, low: 0.1, high: 1}}\npruner: {name: asha}\n", "pruner.name"),
    ("episodes: 3\nparams:\n  lr: {type: float, low: 0.1\n", "line"),
    ("- just\n- a list\n", "(top)"),
    ("episodes: 3\nparams: {lr: {type: float, low: 0.1, high: 1}}\nenqueue: [{H: 8}]\n",
     "enqueue[0].H: not a param of this spec"),
    ("episodes: 3\nparams: {lr: {type: float, low: 0.1, high: 1}}\nenqueue: [{lr: 0.1}, {lr: 2}]\n",
     "enqueue[1].lr: 2: must be a number in [0.1, 1]"),
    ("episodes: 3\nparams: {crop: {type: categorical, choices: [fix]}}\nenqueue: [{crop: karpathy}]\n",
     "enqueue[0].crop: 'karpathy': not one of its choices"),
    ("episodes: 3\nparams: {lr: {type: float, low: 0.1, high: 1}}\nenqueue: {lr: 0.5}\n", "enqueue: {"),
])
def test_bad_specs_name_the_file_and_key(tmp_path, text, key):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "bad.yaml")
    assert str(e.value).startswith(f"{tmp_path / 'bad.yaml'}: ") and key in str(e.value)


# ---- bad input at the command line: one line, exit 2, nothing started ------------------------

@pytest.mark.parametrize("params, args, message", [
    ("  nope: {type: float, low: 0.1, high: 1.0}\n", [], "params.nope: unknown parameter"),
    ("  crop: {type: categorical, choices: [karpathy, bogus]}\n", [], "params.crop: "),
    ("  lr: {type: float, low: 0.0, high: 0.1}\n", [], "params.lr: lr=0.0: must be > 0"),
    ("  lr: {type: float, low: 0.001, high: 0.1}\n", ["n_trials=0"], "n_trials: n_trials=0"),
    ("  lr: {type: float, low: 0.001, high: 0.1}\n", ["storage=postgresql://u@127.0.0.1:{port}/db"], "storage: "),
    ("  lr: {type: float, low: 0.001, high: 0.1}\n", ["storage=no/such/dir/x.journal"], "storage: "),
    ("  lr: {type: float, low: 0.001, high: 0.1}\n", ["tracking.uri=http://127.0.0.1:{port}"], "tracking.uri="),
])
def test_bad_input_stops_before_anything_starts(tmp_path, monkeypatch, capsys, params, args, message):
    name = write(tmp_path, "episodes: 2\nparams:\n" + params)
    args = [a.format(port=free_port()) for a in args]
    assert sweep(tmp_path, monkeypatch, f"sweep={name}", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {name}: ") and message in err[-1], err
    assert [p.name for p in tmp_path.iterdir()] == [name]     # no optuna.db, mlflow.db or outputs/


def test_unknown_sweep_name_lists_the_specs_and_exits_2(tmp_path):
    r = run_cli(["sweep=nope", "n_trials=3"], cwd=tmp_path, module="pgpong.sweep", timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope.yaml: sweep: sweep=nope: no such spec" in lines[0]
    assert "lr_h" in lines[0] and list(tmp_path.iterdir()) == []


def test_shipped_specs_are_valid(tmp_path, monkeypatch):
    from pgpong.sweep.study import SWEEPS_DIR, check_params
    for f in sorted(SWEEPS_DIR.glob("*.yaml")):
        spec = load_spec(f)
        check_params(spec, spec.fixed + [f"episodes={spec.episodes}"])


# ---- real sweeps ---------------------------------------------------------------------------

def test_trials_are_nested_runs_and_pruned_ones_are_killed(tmp_path, monkeypatch, capsys):
    name = write(tmp_path, SPEC)
    n = 4
    assert sweep(tmp_path, monkeypatch, f"sweep={name}", f"n_trials={n}", *TINY_TRIAL) == 0
    out = capsys.readouterr().out
    study = optuna.load_study(study_name="spec", storage=f"sqlite:///{tmp_path}/optuna.db")
    trials = study.get_trials()
    states = [t.state for t in trials]
    assert len(trials) == n and optuna.trial.TrialState.PRUNED in states
    assert optuna.trial.TrialState.COMPLETE in states

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("pgpong").experiment_id
    [parent] = client.search_runs([exp], "tags.pgpong_kind = 'study'")
    runs = {r.info.run_id: r for r in client.search_runs([exp], "tags.pgpong_kind = 'trial'")}
    assert len(runs) == n
    for t in trials:
        r = runs[t.user_attrs["mlflow_run_id"]]
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["optuna_trial"] == str(t.number) and r.data.tags["state"] == t.state.name
        assert r.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[t.state.name]
        assert r.data.params["baseline"] == t.params["baseline"] and "episode/reward" in r.data.metrics
        assert f"`baseline={t.params['baseline']}`" in r.data.tags["mlflow.note.content"]    # its description
        if t.state.name == "COMPLETE":
            assert r.data.metrics["trial/objective"] == pytest.approx(t.value)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_params.yaml", "best_override.txt", "trials.csv", "spec.yaml"} <= artifacts

    # the printed best line and YAML are a ready-to-use run: they compose and validate
    best = yaml.safe_load((tmp_path / "outputs/sweeps/spec/best_params.yaml").read_text())
    assert best["trial"] == study.best_trial.number and f"\n{best['command']}\n" in out
    assert best["command"].startswith("python -m pgpong.run ")
    cfg = compose_cfg(best["overrides"])
    config.validate(cfg)
    assert cfg.baseline.kind == study.best_params["baseline"] and cfg.lr == pytest.approx(study.best_params["lr"])


def test_a_time_to_trial_reports_the_episodes_its_running_reward_took_to_pass(tmp_path, monkeypatch):
    threshold = -3.5     # 200-step episodes score between about -6 and 0: some pass it, some may not
    name = write(tmp_path, f"""\
episodes: 4
direction: minimize
objective: {{kind: time_to, threshold: {threshold}, measure: episodes}}
report_every: 2
sampler: {{name: random, seed: 3}}
pruner: {{name: none}}
fixed: [env.max_episode_steps=200]
params:
  lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
""")
    assert sweep(tmp_path, monkeypatch, f"sweep={name}", "n_trials=2", *TINY_TRIAL) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    study = optuna.load_study(study_name="spec", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    for t in study.get_trials():
        run_id = t.user_attrs["mlflow_run_id"]
        history = sorted(client.get_metric_history(run_id, "episode/running_reward"), key=lambda m: m.step)
        running = [m.value for m in history]
        passed = any(r > threshold for r in running)
        # a trial stops at its first pass (stop_at): its cost is known, the rest would be wasted
        assert len(running) == (1 + [r > threshold for r in running].index(True) if passed else 4)
        assert t.value == pytest.approx(time_to_value(running, [1, 2, 3, 4][:len(running)], threshold))
        assert client.get_run(run_id).data.metrics["trial/reached_seed_0"] == float(passed)
        assert t.user_attrs["reached_seed_0"] == passed
        assert (t.value <= 4) == passed


def test_a_time_to_search_in_seconds_tries_its_enqueued_point_first_and_reports_the_distance_still_to_go(
        tmp_path, monkeypatch):
    threshold = -3.5
    name = write(tmp_path, f"""\
episodes: 6
direction: minimize
objective: {{kind: time_to, threshold: {threshold}, measure: seconds}}
report_every: 1
sampler: {{name: random, seed: 3}}
pruner: {{name: none}}
fixed: [env.max_episode_steps=200]
params:
  lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
enqueue:
  - {{lr: 1.0e-3}}
""")
    assert sweep(tmp_path, monkeypatch, f"sweep={name}", "n_trials=2", *TINY_TRIAL) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    trials = optuna.load_study(study_name="spec", storage=f"sqlite:///{tmp_path}/optuna.db").get_trials()
    assert trials[0].params == {"lr": 1.0e-3} and trials[1].params != {"lr": 1.0e-3}
    for t in trials:
        run_id = t.user_attrs["mlflow_run_id"]
        running = {m.step: m.value for m in client.get_metric_history(run_id, "episode/running_reward")}
        assert all(isinstance(step, int) and step >= 1 for step in t.intermediate_values)   # whole seconds
        for value in t.intermediate_values.values():    # threshold - the running reward at that moment
            assert any(value == pytest.approx(threshold - r) for r in running.values())
        if any(r > threshold for r in running.values()):
            assert t.value <= t.user_attrs["duration_s"]
    assert sum(len(t.intermediate_values) for t in trials) >= 2


def test_a_diverging_trial_fails_and_the_study_goes_on(tmp_path, monkeypatch):
    spec = SPEC.replace("pruner: {name: median, n_startup_trials: 1}", "pruner: {name: none}").replace(
        "lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}", "lr: {type: categorical, choices: [1.0e+38]}")
    spec = spec.replace("sampler: {name: random, seed: 1}", "sampler: {name: random, seed: 1}\nseeds: [0]")
    name = write(tmp_path, spec.replace("[60, 240]", "[240]"))
    assert sweep(tmp_path, monkeypatch, f"sweep={name}", "n_trials=2", *TINY_TRIAL) == 0
    trials = optuna.load_study(study_name="spec", storage=f"sqlite:///{tmp_path}/optuna.db").get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]        # both tried: the first did not stop the study
    assert all("diverged" in t.user_attrs["failure_reason"] for t in trials)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("pgpong").experiment_id], "tags.pgpong_kind = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "FAILED" for r in runs)
    assert all("diverged" in r.data.tags["failure_reason"] for r in runs)


def test_rerunning_resumes_the_study_in_a_journal_file(tmp_path, monkeypatch, capsys):
    name = write(tmp_path, SPEC.replace("pruner: {name: median, n_startup_trials: 1}", "pruner: {name: none}")
                 .replace("[60, 240]", "[40, 60]"))
    args = [f"sweep={name}", "storage=study.journal", "tracking=none", *TINY_TRIAL]
    assert sweep(tmp_path, monkeypatch, *args, "n_trials=2") == 0
    assert sweep(tmp_path, monkeypatch, *args, "n_trials=3") == 0
    assert sweep(tmp_path, monkeypatch, *args, "n_trials=3") == 0      # already complete: no new trial
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal")))
    trials = optuna.load_study(study_name="spec", storage=storage).get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert "3 of 3 trials exist" in capsys.readouterr().err


def test_a_trial_past_n_trials_is_not_trained(tmp_path):
    """Two workers can both ask for a trial when one slot is left: the later number must not train."""
    from pgpong.sweep.study import Objective, SurplusTrial
    spec = load_spec(tmp_path / write(tmp_path, SPEC))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/o.db", study_name="s")
    study.ask()                                   # trial 0: the other worker's, still running
    trial = study.ask()                           # trial 1, but n_trials=1
    objective = Objective(spec, [], 1, "s", tmp_path, compose_cfg(["tracking=none"]).tracking, None, tmp_path)
    with pytest.raises(SurplusTrial):
        objective(trial)
    assert study.get_trials()[1].user_attrs == {"surplus": True} and not (tmp_path / "trial-1").exists()


def test_racing_workers_agree_on_the_earliest_stamped_study_parent_run(tmp_path, monkeypatch):
    """A parent run stamped earlier but stored after ours (a racing worker's request still on its
    way) must win: the worker waits, sees it and deletes its own, as the other worker will decide."""
    import threading
    import time

    from omegaconf import OmegaConf

    from pgpong.sweep import study as sweep_module
    from pgpong.sweep.study import study_parent_run
    monkeypatch.setattr(sweep_module, "PARENT_SETTLE_S", 3.0)   # room for this test's own run to be stored
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = OmegaConf.create({"backend": "mlflow", "uri": uri, "experiment": "race"})
    tags = {"pgpong_kind": "study", "optuna_study": "s", "optuna_storage": "db"}
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("race")
    chosen = []
    worker = threading.Thread(target=lambda: chosen.append(study_parent_run(tracking, tmp_path, "s", "db", tags)))
    stamped = int(time.time() * 1000)
    worker.start()
    deadline = time.monotonic() + 30
    while not client.search_runs([exp]) and time.monotonic() < deadline:   # the worker has stored its run
        time.sleep(0.02)
    other = client.create_run(exp, start_time=stamped - 1, tags=tags)        # earlier stamp, stored later
    worker.join(timeout=60)
    assert chosen == [other.info.run_id]
    active = client.search_runs([exp], "tags.pgpong_kind = 'study'")
    assert [r.info.run_id for r in active] == [other.info.run_id]              # the worker's own was deleted


# ---- a study's summary ---------------------------------------------------------------------

def test_a_study_summary_is_rebuilt_from_its_journal_file_alone(tmp_path):
    from optuna.storages.journal import JournalFileBackend
    from pgpong.sweep.summary import main as summary_main
    journal = tmp_path / "study.journal"
    study = optuna.create_study(study_name="s", direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0),
                                storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.3) ** 2 + 0 * t.suggest_int("n", 1, 3), n_trials=8)
    pruned = study.ask()                    # pruned with an intermediate value below every objective
    pruned.suggest_float("x", 0, 1), pruned.suggest_int("n", 1, 3)
    pruned.report(-1.0, step=5)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    assert summary_main([f"storage={journal}", f"out={tmp_path / 'out'}"]) == 0
    rows = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,value,duration_s,pruned_at_step,last_intermediate,n,x") and len(rows) == 10
    assert rows[-1].startswith("8,PRUNED,,,5,-1.0,")       # no objective value: it never finished
    imp = dict(line.split(",") for line in (tmp_path / "out" / "importances.csv").read_text().splitlines()[1:])
    assert set(imp) == {"x", "n"} and float(imp["x"]) > float(imp["n"])   # only x moves the objective
    assert (tmp_path / "out" / "importances.png").stat().st_size > 1000
    table = (tmp_path / "out" / "trials.md").read_text().splitlines()
    assert table[4].startswith(f"| {study.best_trial.number} | COMPLETE |")
    assert table[12].startswith("| 8 | PRUNED |")                # after every complete trial


def test_a_summary_of_a_missing_journal_is_one_line(tmp_path, capsys):
    from pgpong.sweep.summary import main as summary_main
    assert summary_main([f"storage={tmp_path / 'nope.journal'}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: storage={tmp_path / 'nope.journal'}: no such journal file"
