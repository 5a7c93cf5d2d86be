"""The report on synthetic runs with known curves: in a real MLflow SQLite store and as runs folders.

Each synthetic seed's running reward climbs one point every k episodes from -21
(running = -21 + e / k), so it reaches threshold t at episode (t + 21) * k exactly; with
100 episodes an hour and 1,000 agent steps an episode, at (t + 21) * k * 36 seconds and
(t + 21) * k * 1,000 steps.
"""
import csv
import json
import math

import numpy as np
import pytest

from pgpong.errors import PgpongError
from pgpong.report import build as rep
from pgpong.report import data
from tests.conftest import run_cli

BUDGET = 500                      # episodes per synthetic run
MS_PER_EPISODE = 36_000           # 100 episodes per wall-clock hour
LENGTH = 1000                     # agent steps per episode
K = {"fix": (20, 22, 24), "karpathy": (40, 44, 48)}    # episodes per reward point, per seed
T0 = 1_700_000_000_000


def log_run(client, exp_id, crop, seed, k, episodes=BUDGET, env_id="ALE/Pong-v5", metric=True, tags=None):
    """One synthetic training run with the params and tags pgpong.run writes."""
    from mlflow.entities import Metric, Param
    bottom = {"fix": 185, "karpathy": 195}[crop]
    start = T0 + seed * 10_000_000
    run = client.create_run(exp_id, start_time=start, run_name=f"crop={crop},experiment=crop_fix,seed={seed}",
                            tags={"seed": str(seed), "hydra_overrides": f"crop={crop} experiment=crop_fix seed={seed}",
                                  "git_commit": "0123abc", **(tags or {})})
    rid = run.info.run_id
    params = {"seed": seed, "lr": 0.001, "H": 200, "episodes": episodes, "env.id": env_id, "env.frameskip": None,
              "env.repeat_action_probability": None, "env.max_episode_steps": None, "crop.top": 35,
              "crop.bottom": bottom, "D": 6000 if crop == "fix" else 6400, "tracking.uri": f"sqlite:///x{seed}.db",
              "log_every_s": 30.0, "env.resolved.frameskip": 4, "env.resolved.repeat_action_probability": 0.25,
              "env.resolved.ale_py": "0.12.1", "env.resolved.gymnasium": "1.4.0"}
    client.log_batch(rid, params=[Param(a, str(b)) for a, b in params.items()])
    if metric:
        ms = []
        for e in range(1, episodes + 1):
            ts = start + e * MS_PER_EPISODE
            ms += [Metric(data.RUNNING, -21 + e / k, ts, e), Metric(data.REWARD, -21 + (e % 3), ts, e),
                   Metric(data.LENGTH, LENGTH, ts, e)]
        for i in range(0, len(ms), 1000):
            client.log_batch(rid, metrics=ms[i:i + 1000])
    client.set_terminated(rid, "FINISHED", end_time=start + episodes * MS_PER_EPISODE)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite MLflow store: 2 crops x 3 seeds, 2 identical groups, and some broken selections."""
    from mlflow.tracking import MlflowClient
    root = tmp_path_factory.mktemp("store")
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.create_experiment("crop_fix")
    ids = {crop: [log_run(client, exp, crop, s, k, tags={"sweep_id": "sw1"}) for s, k in enumerate(ks)]
           for crop, ks in K.items()}
    same = client.create_experiment("same")
    for crop in K:
        for s, k in enumerate(K["fix"]):
            log_run(client, same, crop, s, k, episodes=300)
    budgets = client.create_experiment("budgets")
    for s, k in enumerate(K["fix"]):
        log_run(client, budgets, "fix", s, k, episodes=200 + 100 * s)
    mixed = client.create_experiment("mixed_env")
    log_run(client, mixed, "fix", 0, 20, episodes=50)
    log_run(client, mixed, "fix", 1, 20, episodes=50, env_id="Pong-v0")
    nometric = client.create_experiment("no_metric")
    log_run(client, nometric, "fix", 0, 20, episodes=50)
    log_run(client, nometric, "fix", 1, 20, episodes=50, metric=False)
    client.create_experiment("empty")
    return {"root": root, "client": client, "ids": ids}


@pytest.fixture(scope="module")
def crop_fix_report(store):
    return rep.report(["experiment=crop_fix"], launch_dir=store["root"])


def crossing(t, k):
    return (t + 21) * k


def verdict_of(out, t):
    return next(v for v in out["verdicts"] if v.startswith(f"running reward {t:+g}:"))


# ---------------------------------------------------------------- the report on a real store

def test_time_table_has_the_known_kaplan_meier_medians_on_every_axis(crop_fix_report):
    rows = {(r["threshold"], r["group"], r["measure"]): r for r in crop_fix_report["time_rows"]}
    # fix: -10 at 220/242/264, -5 at 320/352/384, 0 at 420/462/(504 > 500: censored at 500)
    # karpathy: -10 at 440/484/(528: censored), -5 and 0 never (all censored); +10: nobody, so no row
    known = {(-10, "fix"): (242, 3), (-5, "fix"): (352, 3), (0, "fix"): (462, 2),
             (-10, "karpathy"): (484, 2), (-5, "karpathy"): (math.inf, 0), (0, "karpathy"): (math.inf, 0)}
    assert {t for t, _, _ in rows} == {-10, -5, 0}
    for (t, crop), (median, reached) in known.items():
        for measure, scale in (("episode", 1), ("seconds", MS_PER_EPISODE / 1000), ("steps", LENGTH)):
            r = rows[(t, f"crop={crop}", measure)]
            assert (r["median"], r["reached"], r["seeds"]) == (median * scale, reached, 3), (t, crop, measure)
    assert rows[(-5, "crop=karpathy", "episode")]["low"] == math.inf


def test_verdicts_follow_the_numbers(crop_fix_report):
    out = crop_fix_report
    # -10 and -5: every fix seed gets there before any karpathy seed: P(fix sooner) = 1 [1, 1]
    for t in (-10, -5):
        assert verdict_of(out, t).startswith(f"running reward {t:+g}: crop=fix reaches {t:+g} sooner than crop=karpathy")
        for measure in ("episode", "seconds", "steps"):
            v = out["found"][("crop=fix", "crop=karpathy", t)][measure]
            assert (v.p, v.low, v.high, v.verdict) == (1.0, 1.0, 1.0, "better")
    # 0: fix 2/3 seeds, karpathy none: 6 sure wins and 3 ties of 9 pairs; a resample of only the
    # censored fix seed (chance 1/27 > 2.5%) makes it 0.5, so the interval touches 0.5: cannot tell
    v0 = out["found"][("crop=fix", "crop=karpathy", 0)]["episode"]
    assert v0.p == pytest.approx(7.5 / 9) and v0.low == 0.5 and v0.verdict == "cannot tell"
    assert "cannot tell which of crop=fix, crop=karpathy reaches +0 sooner" in verdict_of(out, 0)
    assert "median 462 [420, ∞] vs ∞ [∞, ∞] episodes (reached by 2/3 vs 0/3 seeds)" in verdict_of(out, 0)
    assert "median 3.36 h [2.42 h, 2.64 h]" not in verdict_of(out, -10)
    assert "wall-clock: median 2.42 h [2.20 h, 2.64 h] vs 4.84 h [4.40 h, ∞]" in verdict_of(out, -10)
    assert "agent steps: median 242.0k steps [220.0k steps, 264.0k steps]" in verdict_of(out, -10)
    final = out["found"][("crop=fix", "crop=karpathy", "final")]
    assert final.verdict == "better" and final.p == 1.0
    assert "running reward at episode 500 (the shortest run): crop=fix is higher" in out["verdicts"][-1]


def test_groups_table_has_the_iqm_at_the_common_episode(crop_fix_report):
    rows = {r["group"]: r for r in crop_fix_report["groups_rows"]}
    for crop, ks in K.items():
        r = rows[f"crop={crop}"]
        finals = sorted(-21 + BUDGET / k for k in ks)
        # 3 seeds: a 25% trim cuts int(0.75) = 0 from each side, so the IQM is the mean
        assert r["running_iqm"] == pytest.approx(np.mean(finals), abs=2e-3)
        assert r["running_low"] >= finals[0] - 1e-3 and r["running_high"] <= finals[-1] + 1e-3
        assert r["hours_median"] == pytest.approx(BUDGET / 100)
        assert r["steps_per_s_median"] == pytest.approx(LENGTH / 36)


def test_identical_groups_get_no_verdict_either_way(store):
    out = rep.report(["experiment=same"], launch_dir=store["root"])
    for key, found in out["found"].items():
        for v in (found.values() if isinstance(found, dict) else [found]):
            assert v.p == pytest.approx(0.5) and v.verdict == "cannot tell", key


def test_runs_with_different_budgets_are_seeds_of_one_variant_compared_over_the_shortest(store):
    out = rep.report(["experiment=budgets"], launch_dir=store["root"])
    (row,) = out["groups_rows"]
    assert row["seeds"] == 3 and row["at_episode"] == 200 and row["episodes_max"] == 400


def test_report_files_hold_the_numbers_and_the_provenance(store, crop_fix_report):
    d = crop_fix_report["dir"]
    assert d == store["root"] / "reports" / "crop_fix"
    names = {p.name for p in d.iterdir()}
    assert {"report.md", "groups.csv", "times.csv", "runs.csv", "verdicts.txt", "runs"} <= names
    for axis in ("episodes", "hours", "steps"):
        assert (d / f"running_reward_vs_{axis}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (d / f"running_reward_vs_{axis}.svg").read_text()
    times = list(csv.DictReader((d / "times.csv").open()))
    fix10 = next(r for r in times if r["group"] == "crop=fix" and r["threshold"] == "-10" and r["measure"] == "episode")
    assert (fix10["median"], fix10["low"], fix10["high"], fix10["reached"]) == ("242", "220", "264", "3")
    runs = {r["run_id"]: r for r in csv.DictReader((d / "runs.csv").open())}
    first = runs[store["ids"]["fix"][0]]
    assert (first["to_-10_episode"], first["to_-10_seconds"], first["to_-10_steps"]) == ("220", "7920", "220000")
    assert runs[store["ids"]["karpathy"][2]]["to_-10_episode"] == ""          # never: blank, not a number
    md = (d / "report.md").read_text()
    assert "| -10 | crop=fix | 3/3 | 242 [220, 264] | 2.42 h [2.20 h, 2.64 h] |" in md
    assert f"`{store['ids']['fix'][0]}` | FINISHED | 500 | `0123abc` | `crop=fix experiment=crop_fix seed=0` | " \
           "ALE/Pong-v5, frameskip 4, sticky 0.25" in md and "ale-py 0.12.1, gymnasium 1.4.0" in md
    assert "Settings shared by every run: H=200, " in md
    # one CSV and one JSON per run, small and with what produced the run
    rid = store["ids"]["fix"][1]
    run = next(r for g in crop_fix_report["groups"] for r in g.runs if r.run_id == rid)
    assert run.curve["running_reward"][220] == -10.955          # -21 + 221/22, rounded before any statistic
    rows = list(csv.reader((d / "runs" / f"{rid}.csv").open()))
    assert rows[0] == list(data.COLUMNS) and len(rows) == BUDGET + 1
    assert rows[221] == ["221", "-19", "-10.955", "1000", "7956.0", "221000"]
    meta = json.loads((d / "runs" / f"{rid}.json").read_text())
    assert meta["git_commit"] == "0123abc" and meta["params"]["crop.bottom"] == "185"
    assert meta["params"]["env.resolved.ale_py"] == "0.12.1" and meta["experiment"] == "crop_fix"
    assert meta["hydra_overrides"] == "crop=fix experiment=crop_fix seed=1" and meta["status"] == "FINISHED"
    client = store["client"]
    run = client.get_run(crop_fix_report["run_id"])
    assert run.data.tags[rep.REPORT_TAG] == "true" and run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"report.md", "times.csv", "runs"}
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_a_runs_folder_rebuilds_the_same_report_without_mlflow(store, crop_fix_report, tmp_path):
    d = crop_fix_report["dir"]
    again = rep.report([f"from={d / 'runs'}", f"out={tmp_path}"], launch_dir=tmp_path)
    assert again["dir"] == tmp_path / "crop_fix" and again["run_id"] is None
    for f in ("groups.csv", "times.csv", "runs.csv", "verdicts.txt", "running_reward_vs_episodes.svg",
              "running_reward_vs_hours.svg", "running_reward_vs_steps.svg"):
        assert (again["dir"] / f).read_text() == (d / f).read_text(), f
    for p in (d / "runs").iterdir():
        assert (again["dir"] / "runs" / p.name).read_bytes() == p.read_bytes(), p.name
    assert "Runs from: runs folder" in again["markdown"]


def test_folders_and_stores_merge_by_run_id_keeping_the_longest_copy(store, crop_fix_report, tmp_path):
    d = crop_fix_report["dir"] / "runs"
    fix = [r for r in data.read_runs(d, "x") if r.params["crop.bottom"] == "185"]
    data.write_runs(fix, tmp_path / "b")                           # all fix runs
    short = fix[0]
    short.curve = {c: v[:100] for c, v in short.curve.items()}
    data.write_runs([short], tmp_path / "a")                       # a shorter copy of one of them
    for order in ("a,b", "b,a"):
        folders = ",".join(str(tmp_path / f) for f in order.split(","))
        out = rep.report([f"from={folders}", f"out={tmp_path / 'out'}"], launch_dir=tmp_path)
        assert [len(g.runs) for g in out["groups"]] == [3], order
        assert all(r.episodes == BUDGET for g in out["groups"] for r in g.runs), order
        assert "1 duplicate run(s) merged by run id" in out["markdown"]
    both = rep.report([f"from={tmp_path / 'a'}", "experiment=crop_fix", "name=merged", f"out={tmp_path / 'out'}"],
                      launch_dir=store["root"])
    assert sorted(len(g.runs) for g in both["groups"]) == [3, 3]
    assert all(r.episodes == BUDGET for g in both["groups"] for r in g.runs)


def test_several_stores_merge_by_run_id(store, crop_fix_report, tmp_path):
    import shutil

    from mlflow.tracking import MlflowClient
    shutil.copy(store["root"] / "mlflow.db", tmp_path / "copy.db")     # the same 6 runs, and one more seed
    copy = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'copy.db'}")
    extra = log_run(copy, copy.get_experiment_by_name("crop_fix").experiment_id, "karpathy", 3, 52)
    out = rep.report(["experiment=crop_fix", f"tracking.uri=sqlite:///{store['root'] / 'mlflow.db'}",
                      f"tracking.uri=sqlite:///{tmp_path / 'copy.db'}", f"out={tmp_path}"], launch_dir=tmp_path)
    assert sorted(len(g.runs) for g in out["groups"]) == [3, 4] and out["run_id"] is None
    assert extra in {r.run_id for g in out["groups"] for r in g.runs}
    assert "6 duplicate run(s) merged by run id" in out["markdown"] and out["markdown"].count("MLflow experiment") == 2


def test_report_runs_and_sweep_selections_pick_the_same_runs(store, crop_fix_report):
    ids = store["ids"]
    picked = rep.report([f"--runs={ids['fix'][0]},{ids['karpathy'][0]}", "name=two"], launch_dir=store["root"])
    assert [len(g.runs) for g in picked["groups"]] == [1, 1]
    assert "fewer than 3 seeds in a group" in picked["verdicts"][0]
    swept = rep.report(["sweep=sw1", "name=sweep"], launch_dir=store["root"])
    assert swept["time_rows"] == crop_fix_report["time_rows"]
    tagged = rep.report([f"runs=[{','.join(ids['fix'])}]", "tag=sweep_id=sw1", "name=fix-only"],
                        launch_dir=store["root"])
    assert [g.label for g in tagged["groups"]] == ["all runs"]
    assert "nothing to compare" in tagged["verdicts"][-1]


@pytest.mark.parametrize("args, message", [
    (["experiment=empty"], "no training runs match (MLflow experiment empty)"),
    (["experiment=nope"], "experiment=nope: no such MLflow experiment"),
    (["experiment=mixed_env"], "runs are not comparable: env.id differs"),
    (["experiment=no_metric"], "no episode/running_reward metric"),
    (["runs=0123456789abcdef"], "no run 0123456789abcdef"),
    ([], "nothing selected"),
    (["experiment=crop_fix", "colour=red"], "colour: unknown argument"),
    (["experiment=crop_fix", "tracking.uri=sqlite:///missing.db"], "no such MLflow database"),
    (["from=nowhere"], "from=nowhere: no such folder"),
    (["from=reports"], "from=reports: no runs in"),
    (["from=bad"], "bad/r1.json: not a run's JSON"),
    (["from=nocsv"], "nocsv/r1.json: no r1.csv beside it"),
    (["from=text"], "text/r1.csv: column running_reward holds a value that is not a number"),
])
def test_report_refuses_bad_input_with_one_line(store, args, message):
    root = store["root"]
    (root / "reports").mkdir(exist_ok=True)
    for name, js, body in (("bad", "[1, 2]", None), ("nocsv", '{"run_id": "r1", "params": {}}', None),
                           ("text", '{"run_id": "r1", "params": {}}', "episode,running_reward\n1,minus five\n")):
        (root / name).mkdir(exist_ok=True)
        (root / name / "r1.json").write_text(js)
        if body:
            (root / name / "r1.csv").write_text(body)
    with pytest.raises(PgpongError) as e:
        rep.report(args, launch_dir=root)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_report_command_prints_the_tables_and_exits_2_with_one_line_on_errors(store):
    ok = run_cli(["experiment=crop_fix", "name=cli"], cwd=store["root"], module="pgpong.report", timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "| -10 | crop=fix | 3/3 | 242 [220, 264] |" in ok.stdout
    assert (store["root"] / "reports" / "cli" / "runs").is_dir()
    bad = run_cli(["experiment=mixed_env"], cwd=store["root"], module="pgpong.report", timeout=300)
    assert bad.returncode == 2
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: runs are not comparable") and "Traceback" not in bad.stderr


# ---------------------------------------------------------------- verdict logic on runs built in memory

def synthetic(label: str, k: float, seed: int, episodes: int = 400) -> data.Run:
    e = np.arange(1, episodes + 1, dtype=float)
    curve = {"episode": e, "reward": np.full_like(e, -20), "running_reward": -21 + e / k,
             "length": np.full_like(e, 1000), "seconds": e * 36, "steps": e * 1000}
    return data.Run(run_id=f"{label}{seed}", name=f"{label}{seed}", status="FINISHED",
                    params={"seed": str(seed), "variant": label, "env.id": "ALE/Pong-v5"}, tags={},
                    curve=data.rounded(curve))


def verdicts_for(a_ks, b_ks, episodes=400):
    runs = [synthetic("a", k, s, episodes) for s, k in enumerate(a_ks)] + \
           [synthetic("b", k, s, episodes) for s, k in enumerate(b_ks)]
    groups, differ = rep.group_runs(runs)
    return rep.build_report(groups, differ, ["memory"], "test", "t")


def test_all_censored_groups_get_no_verdict_and_say_why():
    out = verdicts_for((100, 110, 120), (100, 110, 120))      # -21 + 400/100 = -17 at best: nobody reaches -10
    assert out["thresholds"] == [-10.0, -5.0, 0.0]
    v = out["found"][("variant=a", "variant=b", -10.0)]["episode"]
    assert (v.p, v.verdict) == (0.5, "cannot tell") and "no seed got there within 400 episodes" in v.reason
    assert "median ∞ [∞, ∞] vs ∞ [∞, ∞] episodes (reached by 0/3 vs 0/3 seeds)" in verdict_of(out, -10)


def test_the_slower_group_named_first_is_worse():
    out = verdicts_for((20, 21, 22), (10, 11, 12))
    assert verdict_of(out, -10).startswith("running reward -10: variant=b reaches -10 sooner than variant=a")
    assert out["found"][("variant=a", "variant=b", "final")].verdict == "worse"


def test_plus_ten_appears_once_a_run_reaches_it():
    out = verdicts_for((10, 11, 12), (10, 11, 12))             # -21 + 400/10 = +19
    assert out["thresholds"] == [-10.0, -5.0, 0.0, 10.0]
    assert any(v.startswith("running reward +10:") for v in out["verdicts"])


def test_the_runs_table_keeps_a_dirty_checkout_visible():
    assert rep._short("e45d236415c11f6d546bda58b0e5aed5323165dc-dirty") == "e45d236415c1-dirty"
    assert rep._short("e45d236415c11f6d546bda58b0e5aed5323165dc") == "e45d236415c1"


def run_with(seed, overrides, **params):
    curve = {"episode": np.arange(1.0, 4.0), "running_reward": np.full(3, -20.0)}
    return data.Run(run_id=f"r{seed}{len(overrides)}", name="", status="FINISHED", curve=curve,
                    params={"seed": str(seed), **params}, tags={"hydra_overrides": overrides})


def test_groups_are_labelled_by_overrides_only_when_they_name_what_differs():
    crop = [run_with(s, f"experiment=crop_fix crop={c} seed={s} episodes=1500", **{"crop.bottom": b, "lr": "0.001"})
            for s in (0, 1) for c, b in (("fix", "184"), ("karpathy", "194"))]
    groups, _ = rep.group_runs(crop)
    assert [g.label for g in groups] == ["crop=fix", "crop=karpathy"]
    # the same engine reached through other overrides: label by the params' values, not "(default)"
    mixed = [run_with(0, "experiment=crop_fix crop=karpathy seed=0 episodes=1500",
                      **{"env.num_envs": "16", "env.vector": "True", "crop.bottom": "194"}),
             run_with(1, "lr=1e-3 env.vector=false env.num_envs=1 seed=1 episodes=1000",
                      **{"env.num_envs": "1", "env.vector": "False", "crop.bottom": "194"})]
    groups, _ = rep.group_runs(mixed)
    assert [g.label for g in groups] == ["env.num_envs=1, env.vector=False", "env.num_envs=16, env.vector=True"]
