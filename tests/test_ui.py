"""The UIs a person opens on pgpong's records, driven in a real headless Chromium.

MLflow: a real multirun of the crop fix lands in a real `mlflow server`; its experiment is marked
as model training, every run has a description, and the runs page lists the nested runs by
name and draws `episode/running_reward` grouped by `crop.bottom`.
Optuna: a real study made by pgpong's sweep driver, served by the real `optuna-dashboard`; its
HTTP API lists the study and its trials, and its history page draws them.
"""
import json
import re
import urllib.request

import optuna
import pytest
from mlflow.tracking import MlflowClient

from pgpong.sweep.study import main as sweep_main
from tests.browser import browser, chart_card, chart_view, expand_parent_runs, group_by, new_page, open_runs  # noqa: F401
from tests.conftest import CONF_DIR, compose_cfg, run_cli
from tests.servers import mlflow_server, optuna_dashboard  # noqa: F401  (pytest fixtures)

KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
NOTE_TAG = "mlflow.note.content"
TINY_JOB = ["seed=0", "episodes=3", "H=8", "batch_size=1", "env.max_episode_steps=100", "env.num_envs=2",
            "checkpoint_every=100"]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def crop_fix_multirun(mlflow_server, tmp_path_factory):
    """(experiment, parent run, child runs) of `-m experiment=crop_fix seed=0` written to the real server."""
    cwd = tmp_path_factory.mktemp("ui-multirun")
    p = run_cli(["-m", "experiment=crop_fix", *TINY_JOB, f"tracking.uri={mlflow_server}",
                 "tracking.experiment=ui_crop_fix"], cwd)
    assert p.returncode == 0, p.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("ui_crop_fix")
    runs = client.search_runs([exp.experiment_id])
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return exp, parent, sorted(children, key=lambda r: r.data.params["crop.bottom"])


@pytest.mark.slow     # ~1 min: an mlflow server starts and a 2-job multirun writes to it
def test_the_multirun_experiment_is_marked_model_training_and_runs_are_described(crop_fix_multirun):
    exp, parent, children = crop_fix_multirun
    assert exp.tags.get(KIND_TAG) == MODEL_TRAINING
    assert [r.data.params["crop.bottom"] for r in children] == ["185", "195"]
    assert "Hydra multirun" in parent.data.tags[NOTE_TAG]
    for r in children:
        note = r.data.tags.get(NOTE_TAG, "")
        crop = "fix" if r.data.params["crop.bottom"] == "185" else "karpathy"
        assert f"`crop={crop}`" in note and "`lr=0.001`" in note and "`episodes=3`" in note, note
        assert "AtariVectorEnv on ALE/Pong-v5, 2 emulators" in note and note.endswith("seed 0."), note


@pytest.mark.slow
def test_mlflow_ui_lists_nested_runs_charts_running_reward_and_shows_descriptions(crop_fix_multirun, mlflow_server, browser):
    exp, _, children = crop_fix_multirun
    page = new_page(browser)
    open_runs(page, mlflow_server, exp.experiment_id)
    expand_parent_runs(page)
    for r in children:
        page.get_by_text(r.info.run_name, exact=True).first.wait_for()

    group_by(page, "crop.bottom")
    chart_view(page, "running_reward")
    card = chart_card(page, "episode/running_reward")
    card.locator(".js-plotly-plot").wait_for()
    for bottom in ("185", "195"):       # one line per crop, named by the group
        card.get_by_text(f"{bottom} (episode/running_reward)").wait_for()
    lines = card.locator(".scatterlayer .trace path.js-line")
    assert lines.count() >= 2
    assert all(len(lines.nth(i).get_attribute("d") or "") > 20 for i in range(lines.count()))

    run = children[0]      # its page shows its description
    page.goto(f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}?workflowType=machine_learning")
    page.get_by_text("Engine: ale-py AtariVectorEnv").wait_for()
    page.close()


@pytest.mark.parametrize("overrides, expected", [
    ([], "The defaults (the gist's algorithm), unchanged.\n"
         "Engine: ale-py AtariVectorEnv on ALE/Pong-v5, 16 emulators in 2 group(s); seed 0."),
    (["experiment=crop_fix", "crop=karpathy", "seed=2", "H=8"],
     "Overrides of the defaults (the gist's algorithm): `experiment=crop_fix`, `crop=karpathy`, `H=8`, "
     "`lr=0.001`.\nEngine: ale-py AtariVectorEnv on ALE/Pong-v5, 16 emulators in 2 group(s); "
     "seed 2."),
    (["env=pong_v0", "crop=fix", "lr=1e-3"],
     "Overrides of the defaults (the gist's algorithm): `crop=fix`, `env=pong_v0`, `lr=0.001`.\n"
     "Engine: gymnasium Pong-v0, 1 env(s); seed 0."),
], ids=["defaults", "crop_fix_job", "gist_env"])
def test_run_description_names_overrides_engine_and_seed(overrides, expected):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from pgpong.tracking.naming import description
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        composed = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    choices = OmegaConf.to_container(composed.hydra.runtime.choices)
    cfg = compose_cfg(overrides)
    assert description(cfg, choices, overrides) == expected


def test_existing_experiment_without_the_kind_tag_gets_it(tmp_path):
    from pgpong.tracking.tracker import experiment_id
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    old = client.create_experiment("made_elsewhere")
    assert KIND_TAG not in client.get_experiment(old).tags
    assert experiment_id(client, "made_elsewhere") == old
    assert client.get_experiment(old).tags[KIND_TAG] == MODEL_TRAINING
    new = experiment_id(client, "made_here")
    assert client.get_experiment(new).tags[KIND_TAG] == MODEL_TRAINING


def test_optuna_dashboard_serves_a_pgpong_study(tmp_path, monkeypatch, browser):
    (tmp_path / "spec.yaml").write_text(
        "episodes: 2\nreport_every: 1\nobjective: {kind: final}\nsampler: {name: random, seed: 1}\n"
        "pruner: {name: none}\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "  crop: {type: categorical, choices: [karpathy, fix]}\n")
    monkeypatch.chdir(tmp_path)
    assert sweep_main(["sweep=spec.yaml", "n_trials=3", "study=ui_study", "tracking=none", "H=8", "batch_size=1",
                       "env.max_episode_steps=60", "env.num_envs=2", "checkpoint_every=100"]) == 0
    storage = f"sqlite:///{tmp_path}/optuna.db"
    trials = optuna.load_study(study_name="ui_study", storage=storage).get_trials()

    with optuna_dashboard(storage) as url:
        [summary] = get_json(url + "/api/studies")["study_summaries"]
        assert summary["study_name"] == "ui_study" and summary["directions"] == ["maximize"]
        study = get_json(f"{url}/api/studies/{summary['study_id']}")
        served = {t["number"]: t for t in study["trials"]}
        assert sorted(served) == [t.number for t in trials] == [0, 1, 2]
        for t in trials:
            s = served[t.number]
            assert s["state"] == "Complete" and s["values"] == [pytest.approx(t.value)]
            assert {p["name"]: p["param_external_value"] for p in s["params"]}["crop"] == t.params["crop"]

        page = new_page(browser)
        page.goto(f"{url}/dashboard/studies/{summary['study_id']}")
        page.get_by_text("ui_study").first.wait_for()
        history = page.locator(".js-plotly-plot").first
        history.wait_for()
        assert history.locator(".scatterlayer .trace .point").count() >= len(trials)
        page.close()


def test_ui_page_shows_small_screenshots_that_exist():
    from pathlib import Path
    docs = Path(__file__).resolve().parent.parent / "docs"
    images = re.findall(r"!\[[^\]]*\]\((img/[^)]+\.png)\)", (docs / "ui.md").read_text())
    assert len(images) >= 5
    for name in images:
        assert (docs / name).is_file(), name
        assert (docs / name).stat().st_size < 200_000, name
