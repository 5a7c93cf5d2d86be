"""`python -m pgpong.bench` for real, with a tiny budget: the table and its JSON."""
import json


def test_bench_smoke_writes_the_table_as_json(cli, tmp_path):
    out = tmp_path / "bench.json"
    r = cli(["--seconds", "1", "--repeats", "1", "--json", str(out), "env.num_envs=2", "H=16"], cwd=tmp_path,
            module="pgpong.bench")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trainer / ceiling" in r.stdout and "trainer / naive" in r.stdout
    result = json.loads(out.read_text())
    table = result["table"]
    for kind in ("ceiling", "ceiling_as_trained", "ceiling_one_env", "naive", "trainer"):
        row = table[kind]
        assert len(row["steps_per_s"]) == 1 and row["steps_per_s_median"] > 0
        assert row["frames_per_s_median"] == 4 * row["steps_per_s_median"]
    # two groups by default: the ceiling is the faster of the emulators as trained and in one vector env
    assert result["settings"]["env.groups"] == 2
    assert table["ceiling"]["steps_per_s"] == [max(table["ceiling_as_trained"]["steps_per_s"][0],
                                                   table["ceiling_one_env"]["steps_per_s"][0])]
    assert "- as trained" in r.stdout and "- one vector env" in r.stdout
    ratios = result["ratios"]
    assert ratios["trainer_over_ceiling"] == result["table"]["trainer"]["steps_per_s_median"] / \
        result["table"]["ceiling"]["steps_per_s_median"]
    assert ratios["trainer_over_naive"] > 0
    assert result["settings"]["env.num_envs"] == 2 and result["settings"]["env.num_threads"] == 2


def test_bench_rejects_a_bad_budget(cli, tmp_path):
    r = cli(["--seconds", "0"], cwd=tmp_path, module="pgpong.bench")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: --seconds=0")
