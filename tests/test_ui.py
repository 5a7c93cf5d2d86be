"""The UIs a person opens on pgpong's records, driven in a real headless Chromium.

Optuna: a real study made by pgpong's sweep driver, served by the real `optuna-dashboard`; its
HTTP API lists the study and its trials, and its history page draws them.
"""
import json
import urllib.request

import optuna
import pytest

from pgpong.sweep.study import main as sweep_main
from tests.browser import browser, new_page  # noqa: F401
from tests.servers import optuna_dashboard


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


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
