"""The report on synthetic runs logged to a real MLflow SQLite store: known curves, known crossings.

Each synthetic seed's running reward climbs one point every k episodes from -21
(running = -21 + e / k), so it reaches threshold t at episode (t + 21) * k exactly.
"""
import csv
import math

import numpy as np
import pytest
from scipy import stats

from pgpong.errors import PgpongError
from pgpong.report import build as rep
from pgpong.report.stats import band, first_crossing, gehan, welch
from tests.conftest import run_cli

BUDGET = 500                      # episodes per synthetic run
MS_PER_EPISODE = 36_000           # 100 episodes per wall-clock hour
K = {"fix": (20, 22, 24), "karpathy": (40, 44, 48)}    # episodes per reward point, per seed
SPEED = {"fix": 5000.0, "karpathy": 4000.0}
T0 = 1_700_000_000_000


def log_run(client, exp_id, crop, seed, k, episodes=BUDGET, env_id="ALE/Pong-v5", metric=True, tags=None):
    """One synthetic training run with the params and tags pgpong.run writes."""
    from mlflow.entities import Metric, Param
    bottom = {"fix": 185, "karpathy": 195}[crop]
    start = T0 + seed * 10_000_000
    run = client.create_run(exp_id, start_time=start, run_name=f"crop={crop},experiment=crop_fix,seed={seed}",
                            tags={"seed": str(seed), "hydra_overrides": f"crop={crop} experiment=crop_fix seed={seed}",
                                  **(tags or {})})
    rid = run.info.run_id
    params = {"seed": seed, "lr": 0.001, "H": 200, "episodes": episodes, "env.id": env_id, "env.frameskip": None,
              "env.repeat_action_probability": None, "env.max_episode_steps": None, "crop.top": 35,
              "crop.bottom": bottom, "D": 6000 if crop == "fix" else 6400, "tracking.uri": f"sqlite:///x{seed}.db",
              "log_every_s": 30.0, "env.resolved.frameskip": 4, "env.resolved.repeat_action_probability": 0.25}
    client.log_batch(rid, params=[Param(a, str(b)) for a, b in params.items()])
    if metric:
        ms = []
        for e in range(1, episodes + 1):
            ts = start + e * MS_PER_EPISODE
            ms += [Metric(rep.RUNNING, -21 + e / k, ts, e), Metric(rep.REWARD, -21 + (e % 3), ts, e),
                   Metric(rep.SPEED, SPEED[crop], ts, e)]
        for i in range(0, len(ms), 1000):
            client.log_batch(rid, metrics=ms[i:i + 1000])
    client.set_terminated(rid, "FINISHED", end_time=start + episodes * MS_PER_EPISODE)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite MLflow store with a 2 crops x 3 seeds experiment and some broken selections."""
    from mlflow.tracking import MlflowClient
    root = tmp_path_factory.mktemp("store")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.create_experiment("crop_fix")
    ids = {crop: [log_run(client, exp, crop, s, k, tags={"sweep_id": "sw1"}) for s, k in enumerate(ks)]
           for crop, ks in K.items()}
    mixed = client.create_experiment("mixed_env")
    log_run(client, mixed, "fix", 0, 20, episodes=50)
    log_run(client, mixed, "fix", 1, 20, episodes=50, env_id="Pong-v0")
    nometric = client.create_experiment("no_metric")
    log_run(client, nometric, "fix", 0, 20, episodes=50)
    bare = log_run(client, nometric, "fix", 1, 20, episodes=50, metric=False)
    client.create_experiment("empty")
    return {"root": root, "client": client, "ids": ids, "bare": bare}


@pytest.fixture(scope="module")
def crop_fix_report(store):
    return rep.report(["experiment=crop_fix"], launch_dir=store["root"])


# ---------------------------------------------------------------- pure statistics

def test_first_crossing_is_the_first_episode_at_or_above_the_threshold():
    e = np.arange(1, 11)
    r = np.array([-21, -16, -15.5, -15, -16, -14, -10, -9, -9, -9], float)
    assert first_crossing(e, r, -15) == 4
    assert first_crossing(e, r, -10) == 7
    assert first_crossing(e, r, 0) is None


def test_band_is_the_95_percent_t_interval_of_the_mean_across_seeds():
    curves = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    mean, lo, hi = band(curves)
    for j in range(2):
        ci = stats.t.interval(0.95, 2, loc=curves[:, j].mean(), scale=stats.sem(curves[:, j]))
        assert mean[j] == pytest.approx(curves[:, j].mean())
        assert (lo[j], hi[j]) == pytest.approx(ci)


def test_welch_matches_scipy_and_its_interval_contains_the_difference():
    a, b = [120, 132, 144], [240, 264, 288]
    c = welch(a, b)
    assert c.p == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert c.diff == pytest.approx(132)
    assert c.ci[0] < 132 < c.ci[1]


def test_gehan_without_censoring_equals_the_exact_mann_whitney_test():
    a, b = [3.0, 9.0, 4.0, 12.0], [8.0, 15.0, 11.0, 20.0, 14.0]
    c = gehan(a, [True] * 4, b, [True] * 5)
    assert c.p == pytest.approx(stats.mannwhitneyu(a, b, method="exact").pvalue)


def test_gehan_counts_seeds_that_never_got_there_as_later_than_their_last_episode():
    # 5 seeds that got there early against 5 that never did within 500: complete separation,
    # exact two-sided p = 2 / C(10, 5) = 2/252; with 3 + 3 seeds it can be no smaller than 2/20.
    c = gehan([100, 110, 120, 130, 140], [True] * 5, [500] * 5, [False] * 5)
    assert c.p == pytest.approx(2 / 252) and c.later == "b"
    c3 = gehan([100, 110, 120], [True] * 3, [500] * 3, [False] * 3)
    assert c3.p == pytest.approx(0.1) and c3.min_p == pytest.approx(0.1)
    # a censored seed at 90 says nothing against observed 100..140: no evidence either way
    c_unknown = gehan([100, 110], [True, True], [90, 95], [False, False])
    assert c_unknown.p == pytest.approx(1.0)


# ---------------------------------------------------------------- the report on a real store

def crossing(t, k):
    return (t + 21) * k


def test_report_table_has_the_known_crossings_of_each_group(crop_fix_report):
    rows = {r["group"]: r for r in crop_fix_report["rows"]}
    assert set(rows) == {"crop=fix", "crop=karpathy"}
    for crop, ks in K.items():
        row = rows[f"crop={crop}"]
        assert row["seeds"] == 3 and row["episodes_min"] == row["episodes_max"] == BUDGET
        for t in (-15, -10, -5, 0, 5):
            x = [crossing(t, k) for k in ks if crossing(t, k) <= BUDGET]
            assert row[f"to_{t:+g}_reached"] == len(x), (crop, t)
            if x:
                assert row[f"to_{t:+g}_mean"] == pytest.approx(np.mean(x))
            if len(x) > 1:
                assert row[f"to_{t:+g}_sd"] == pytest.approx(np.std(x, ddof=1))
        assert row["final_mean"] == pytest.approx(np.mean([-21 + BUDGET / k for k in ks]))
        assert row["hours_mean"] == pytest.approx(BUDGET / 100)
        assert row["steps_per_s_mean"] == pytest.approx(SPEED[crop])
    # fix: -15 at 120/132/144, +0 at 420/462/(504 > 500: never); karpathy: -10 at 440/484/(528: never)
    assert rows["crop=fix"]["to_+0_reached"] == 2 and rows["crop=karpathy"]["to_-10_reached"] == 2
    assert rows["crop=karpathy"]["to_-5_reached"] == 0


def test_report_verdicts_name_the_test_and_handle_seeds_that_never_got_there(crop_fix_report):
    v = {line.split(":")[0]: line for line in crop_fix_report["verdicts"]}
    p = stats.ttest_ind([240, 264, 288], [120, 132, 144], equal_var=False).pvalue
    assert "crop=fix gets there 132 episodes sooner on average" in v["running reward -15"]
    assert "larger than the seed-to-seed spread" in v["running reward -15"]
    assert f"Welch t-test p={p:.3f}" in v["running reward -15"]
    assert "1 never did within 500" in v["running reward -10"]
    assert "Gehan" in v["running reward -10"] and "smallest possible p is 0.10" in v["running reward -10"]
    assert "crop=karpathy never did (0/3 seeds" in v["running reward -5"]
    assert "no seed of either group got there" in v["running reward +5"]
    assert "final running reward" in v


def test_report_files_are_written_and_logged_as_a_report_run(store, crop_fix_report):
    d = crop_fix_report["dir"]
    assert d == store["root"] / "reports" / "crop_fix"
    names = {p.name for p in d.iterdir()}
    assert {"report.md", "table.csv", "runs.csv", "verdicts.txt", "running_reward_vs_episodes.png",
            "running_reward_vs_episodes.svg", "running_reward_vs_hours.png", "running_reward_vs_hours.svg"} <= names
    assert (d / "running_reward_vs_episodes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (d / "running_reward_vs_hours.svg").read_text()
    rows = list(csv.DictReader((d / "table.csv").open()))
    assert [r["group"] for r in rows] == ["crop=fix", "crop=karpathy"]
    assert float(rows[0]["to_-15_mean"]) == pytest.approx(132)
    assert len(list(csv.DictReader((d / "runs.csv").open()))) == 6
    md = (d / "report.md").read_text()
    assert "| crop=fix | 3 | 500 | 132 ± 12 (3/3) |" in md
    client = store["client"]
    run = client.get_run(crop_fix_report["run_id"])
    assert run.data.tags[rep.REPORT_TAG] == "true" and run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"report.md", "table.csv",
                                                                       "running_reward_vs_episodes.svg"}
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_report_runs_and_sweep_selections_pick_the_same_runs(store, crop_fix_report):
    ids = store["ids"]
    picked = rep.report([f"--runs={ids['fix'][0]},{ids['karpathy'][0]}", "name=two"], launch_dir=store["root"])
    assert [len(g.runs) for g in picked["groups"]] == [1, 1]
    assert any("at least 2 seeds" in v for v in picked["verdicts"])
    swept = rep.report(["sweep=sw1", "name=sweep"], launch_dir=store["root"])
    assert [r["to_-15_mean"] for r in swept["rows"]] == [r["to_-15_mean"] for r in crop_fix_report["rows"]]
    tagged = rep.report([f"runs=[{','.join(ids['fix'])}]", "tag=sweep_id=sw1", "name=fix-only"],
                        launch_dir=store["root"])
    assert [g.label for g in tagged["groups"]] == ["all runs"]
    assert "nothing to compare" in tagged["verdicts"][-1]


def test_a_second_report_ignores_earlier_report_runs_and_replaces_the_folder(store, crop_fix_report):
    again = rep.report(["experiment=crop_fix"], launch_dir=store["root"])
    assert sum(len(g.runs) for g in again["groups"]) == 6
    assert again["dir"] == crop_fix_report["dir"] and (again["dir"] / "report.md").is_file()


@pytest.mark.parametrize("args, message", [
    (["experiment=empty"], "no training runs match (MLflow experiment empty)"),
    (["experiment=nope"], "experiment=nope: no such MLflow experiment"),
    (["experiment=mixed_env"], "runs are not comparable: env.id differs"),
    (["experiment=no_metric"], "no episode/running_reward metric"),
    (["runs=0123456789abcdef"], "no run 0123456789abcdef"),
    ([], "nothing selected"),
    (["experiment=crop_fix", "colour=red"], "colour: unknown argument"),
    (["experiment=crop_fix", "tracking.uri=sqlite:///missing.db"], "no such MLflow database"),
])
def test_report_refuses_empty_or_incomparable_selections_with_one_line(store, args, message):
    with pytest.raises(PgpongError, match=None) as e:
        rep.report(args, launch_dir=store["root"])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_report_command_prints_the_table_and_exits_2_with_one_line_on_errors(store):
    ok = run_cli(["experiment=crop_fix", "name=cli"], cwd=store["root"], module="pgpong.report", timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "| crop=fix | 3 | 500 | 132 ± 12 (3/3) |" in ok.stdout
    assert (store["root"] / "reports" / "cli" / "report.md").is_file()
    bad = run_cli(["experiment=mixed_env"], cwd=store["root"], module="pgpong.report", timeout=120)
    assert bad.returncode == 2
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: runs are not comparable") and "Traceback" not in bad.stderr


def test_crop_fix_experiment_sweeps_both_crops_at_lr_1e_3(cfg_factory):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=["experiment=crop_fix"], return_hydra_config=True)
    assert cfg.lr == pytest.approx(1e-3) and cfg.episodes == 10000
    assert cfg.tracking.experiment == "crop_fix"
    assert cfg.hydra.sweeper.params == {"crop": "karpathy,fix"}
    base = cfg_factory([])
    for key in ("H", "batch_size", "gamma", "decay_rate"):
        assert cfg[key] == base[key], key          # everything else the gist's
    assert cfg_factory(["experiment=crop_fix", "crop=fix"]).crop.bottom == 185
    assert math.isclose(cfg_factory(["experiment=crop_fix", "episodes=500"]).episodes, 500)


def test_arguments_work_as_key_value_and_as_double_dash_options():
    from pgpong import cliargs
    a = cliargs.parse(["--runs", "a,b", "--sweep=s1", "tag=k=v", "tag=x=y", "tracking.uri=sqlite:///m.db"],
                      rep.KEYS, repeatable=("tag",))
    assert a == {"runs": "a,b", "sweep": "s1", "tag": ["k=v", "x=y"], "tracking.uri": "sqlite:///m.db"}
    assert cliargs.as_list("[a, 'b',c]") == cliargs.as_list("a,b,c") == ["a", "b", "c"]
    with pytest.raises(PgpongError, match="--runs: needs a value"):
        cliargs.parse(["--runs"], rep.KEYS)
