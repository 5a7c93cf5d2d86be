"""Every `python -m pgpong.*` line in the README parses as written: its overrides compose, its
keys and flags exist, the sweep spec it names is found. Nothing trains."""
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"^```\n(.*?)^```", README.read_text(), re.M | re.S)
    lines = [ln.split("  #")[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith("python -m pgpong.")]


def test_the_readme_is_a_manual_of_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= 200
    assert {m.split()[2] for m in readme_commands()} >= {
        "pgpong.run", "pgpong.sweep", "pgpong.report", "pgpong.play", "pgpong.bench"}


def _help_text(main, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("line", readme_commands())
def test_each_readme_command_parses(line, tmp_path, monkeypatch, capsys):
    module, args = shlex.split(line)[2], shlex.split(line)[3:]
    monkeypatch.chdir(tmp_path)
    if module == "pgpong.run":
        from pgpong.cli import precheck
        precheck(args)                              # exits 2 on a bad override
    elif module == "pgpong.sweep":
        from pgpong.sweep.study import prepare
        prepared = prepare(args, tmp_path)          # the spec is found and every override composes
        assert prepared["spec"].file.is_file()
    elif module in ("pgpong.play", "pgpong.report"):
        from pgpong import cliargs, play
        from pgpong.report import build
        keys = play.KEYS if module == "pgpong.play" else build.KEYS
        cliargs.parse(args, keys, repeatable=("tag",))
    elif module in ("pgpong.bench", "pgpong.tracking"):
        from pgpong import bench
        from pgpong.tracking import tracker
        text = _help_text(bench.main if module == "pgpong.bench" else tracker.main, capsys)
        for word in args:
            if word.startswith("-") or module == "pgpong.tracking" and word == args[0]:
                assert word in text, f"{word} is not an option of {module}"
    else:
        pytest.fail(f"no check for {module}")


def test_the_headline_quotes_the_committed_time_to_beat_the_built_in_ai():
    """The README's minutes and seed count are those of docs/results/fast/times.csv (the report
    rebuilt from the committed runs), so the headline cannot drift from the data."""
    import csv
    section = README.read_text().split("## Beating the built-in AI", 1)[1].split("\n## ", 1)[0]
    rows = list(csv.DictReader((README.parent / "docs/results/fast/times.csv").open()))
    (row,) = [r for r in rows if r["threshold"] == "0" and r["measure"] == "seconds"]
    reached = re.search(r"(\d+) of (\d+) seeds got there", section)
    assert reached and reached.groups() == (row["reached"], row["seeds"])
    minutes = lambda s: "not bounded" if float(s) == float("inf") else f"{float(s) / 60:.1f} min"
    assert f"**{minutes(row['median'])[:-4]} minutes**" in section
    assert f"[{minutes(row['low'])}, {minutes(row['high'])}]" in section
