"""`python -m pgpong.bench` for real, with a tiny budget: the table, its JSON, and how each row is computed."""
import json
import os
import statistics

import pytest

from pgpong import bench
from pgpong.engine.envs import usable_cores


def test_bench_smoke_writes_the_table_as_json(cli, tmp_path):
    out = tmp_path / "bench.json"
    r = cli(["--seconds", "1", "--repeats", "1", "--run-episodes", "2", "--json", str(out), "env.num_envs=2", "H=16",
             "env.max_episode_steps=100"], cwd=tmp_path, module="pgpong.bench")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    table = result["table"]
    for kind in ("ceiling", "ceiling_as_trained", "ceiling_one_env", "gist_v5", "gist_v0", "trainer", "whole_process"):
        row = table[kind]
        assert len(row["steps_per_s"]) == 1 and row["steps_per_s_median"] > 0
        assert row["steps_per_s_median"] == statistics.median(row["steps_per_s"])
    for kind in ("ceiling_as_trained", "ceiling_one_env", "gist_v5", "gist_v0", "trainer", "whole_process"):
        (run,) = table[kind]["runs"]                                   # rates are steps over seconds
        assert table[kind]["steps_per_s"] == [run["steps"] / run["seconds"]]
        assert table[kind]["frames_per_s_median"] == run["frames"] / run["seconds"]
    for kind in ("ceiling_as_trained", "gist_v5", "trainer", "whole_process"):   # frameskip 4 on ALE/Pong-v5
        assert table[kind]["runs"][0]["frames"] == 4 * table[kind]["runs"][0]["steps"]
    gist_v0 = table["gist_v0"]["runs"][0]                               # Pong-v0: 2 to 4 frames per step, counted
    assert 2 * gist_v0["steps"] <= gist_v0["frames"] <= 4 * gist_v0["steps"]
    # the whole process: two envs in two groups, both episodes cut at 100 steps: 200 agent steps, start-up included
    assert table["whole_process"]["runs"][0]["steps"] == 200
    assert table["whole_process"]["runs"][0]["seconds"] > 200 / table["trainer"]["steps_per_s_median"]
    # two groups by default: the ceiling is the faster of the emulators as trained and in one vector env
    assert result["settings"]["env.groups"] == 2
    assert table["ceiling"]["steps_per_s"] == [max(table["ceiling_as_trained"]["steps_per_s"][0],
                                                   table["ceiling_one_env"]["steps_per_s"][0])]
    ratios = result["ratios"]
    median = lambda kind: table[kind]["steps_per_s_median"]
    assert result["settings"]["gist_row"] == "gist_v5"                  # the gist's loop on the trainer's env id
    assert ratios == {"trainer_over_ceiling": median("trainer") / median("ceiling"),
                      "trainer_over_gist": median("trainer") / median("gist_v5"),
                      "whole_process_over_gist": median("whole_process") / median("gist_v5"),
                      "whole_process_over_trainer": median("whole_process") / median("trainer")}
    assert result["settings"]["env.num_envs"] == 2 and result["settings"]["env.num_threads"] == 1   # as used: 1 env per group
    assert result["settings"]["one_env.num_threads"] == os.cpu_count()     # one vector env: a thread per core
    assert len(result["settings"]["load_average_1min"]) == 2 and "1-minute load average" in r.stdout
    for name in ("- as trained", "- one vector env", "gist, ALE/Pong-v5", "gist, Pong-v0", "whole process",
                 "trainer / gist, ALE/Pong-v5", "whole process / gist, ALE/Pong-v5", "whole process / trainer"):
        assert name in r.stdout, name


def test_bench_rejects_a_bad_budget(cli, tmp_path):
    r = cli(["--seconds", "0"], cwd=tmp_path, module="pgpong.bench")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: --seconds=0")


def test_the_ceiling_also_steps_a_single_threaded_vector_env_per_core():
    """A trainer laid out otherwise (here 2 threads per group) is compared with the emulators
    laid out a thread per core, one vector env each, too; a layout that is that already is not run twice."""
    cores = usable_cores()
    if cores < 2 or 16 % cores:
        pytest.skip(f"16 envs do not divide among {cores} cores")
    cfg = bench.compose(["env.num_threads=2"])
    per = bench.per_core_layout(cfg)
    assert (per.env.groups, per.env.num_threads, per.env.num_envs) == (cores, 1, 16)
    assert bench.ceiling_kinds(cfg) == ("ceiling_as_trained", "ceiling_one_env", "ceiling_per_core")
    as_per_core = bench.compose([f"env.groups={cores}", "env.num_threads=1"])
    assert bench.per_core_layout(as_per_core) is None and "ceiling_per_core" not in bench.ceiling_kinds(as_per_core)
    small = bench.compose([f"env.num_envs={cores}", "env.num_threads=2", "env.groups=1", "H=16"])
    steps, seconds = bench.RUNNERS["ceiling_per_core"](small, 0.5)
    assert steps > 0 and steps % cores == 0 and seconds > 0       # every emulator stepped, group by group
