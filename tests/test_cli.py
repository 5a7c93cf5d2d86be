"""Hydra's own command-line conventions work on `python -m pgpong.run`, next to the one-line pre-check."""
import pytest
from hydra._internal.utils import get_args_parser

from pgpong.cli import user_config_dirs


@pytest.mark.parametrize("flags,expected", [
    (["--cfg", "job", "lr=0.003"], "lr: 0.003"),
    (["-c", "job", "H=17"], "H: 17"),
    (["--cfg=job", "crop=fix"], "bottom: 185"),
    (["--cfg", "hydra"], "help:"),
    (["--resolve", "--cfg", "job"], "episodes: 10000"),
    (["--info"], "Defaults List"),
    (["-sc", "install=bash"], "hydra_bash_completion"),
])
def test_hydra_flags_print_and_start_nothing(tmp_path, cli, flags, expected):
    proc = cli(flags, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


def test_help_shows_pgpongs_usage_and_only_real_options(tmp_path, cli):
    proc = cli(["--help"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pgpong: train")
    assert "python -m pgpong.run --cfg job" in proc.stdout
    assert "baseline: mean, none, standardize, value" in proc.stdout
    assert "optim: adam, rmsprop" in proc.stdout
    assert "_schema" not in proc.stdout


@pytest.mark.parametrize("flags,expected", [
    (["--cfg", "job", "lr=abc"], "error: lr=abc: must be a number"),
    (["-c", "job", "nope=1"], "error: nope: unknown key; allowed at the top level: H, lr,"),
    (["crop=nope"], "error: crop=nope: no such option; choose one of fix, karpathy"),
])
def test_a_bad_override_next_to_hydra_flags_is_still_one_line(tmp_path, cli, flags, expected):
    proc = cli(flags, cwd=tmp_path)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr


def test_a_users_config_folder_adds_experiments_and_is_prechecked(tmp_path, cli):
    (tmp_path / "mine" / "experiment").mkdir(parents=True)
    (tmp_path / "mine" / "experiment" / "small.yaml").write_text("# @package _global_\nH: 6\nlr: 2e-3\n")
    proc = cli(["--config-dir", "mine", "experiment=small", "--cfg", "job"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "H: 6" in proc.stdout and "lr: 0.002" in proc.stdout
    proc = cli(["--config-dir", "mine", "experiment=big", "--cfg", "job"], cwd=tmp_path)
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert message.startswith("error: experiment=big: no such option; choose one of crop_fix, ") and "small" in message


def test_user_config_dirs_come_from_config_dir_and_searchpath():
    args = get_args_parser().parse_args(["-cd", "a", "hydra.searchpath=[file:///b,pkg://x.y]", "lr=1"])
    assert user_config_dirs(args) == ["a", "/b"]
