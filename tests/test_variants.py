"""Every option of every config group runs through the real `python -m pgpong.run`, and the
variants' choices are tracked. New files in conf/<group>/ are picked up automatically."""
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pgpong.core.preprocess import input_size
from pgpong.engine import checkpoint
from tests.conftest import CONF_DIR, TINY, assert_learned, compose_cfg

SKIP_GROUPS = {"experiment", "hydra"}   # experiments are multiruns with their own tests
OPTIONS = sorted((g.name, f.stem) for g in Path(CONF_DIR).iterdir() if g.is_dir() and g.name not in SKIP_GROUPS
                 for f in g.glob("*.yaml"))


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert {"env", "tracking", "crop", "input", "baseline", "optim", "actions"} <= groups


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_group_option_runs_for_real(tmp_path, cli, group, option):
    tracking = [] if group == "tracking" else ["tracking=none"]
    proc = cli(TINY + ["batch_size=2", f"{group}={option}"] + tracking, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (model,) = tmp_path.glob("outputs/*/*/model.npz")
    arrays, meta = checkpoint.load(model)
    cfg = compose_cfg(TINY + [f"{group}={option}"])
    assert arrays["W1"].shape == (input_size(cfg.crop, cfg.input.kind), 8)
    assert_learned(arrays, cfg)                          # every weight array moved: points scored, updates made
    assert meta["config"][group] == dict(cfg[group])


@pytest.mark.parametrize("crop,shape", [("karpathy", 6400), ("fix", 6000)])
@pytest.mark.parametrize("kind,factor", [("diff", 1), ("raw", 1), ("stack", 2)])
def test_input_width_follows_crop_and_input(crop, shape, kind, factor):
    cfg = compose_cfg([f"crop={crop}", f"input={kind}"])
    assert input_size(cfg.crop, cfg.input.kind) == shape * factor


def test_each_option_has_its_own_keys():
    assert set(compose_cfg(["optim=adam"]).optim) == {"name", "beta1", "beta2", "eps"}
    assert set(compose_cfg(["optim=rmsprop"]).optim) == {"name", "eps"}
    assert set(compose_cfg(["baseline=value"]).baseline) == {"kind", "lr"}
    assert set(compose_cfg(["baseline=mean"]).baseline) == {"kind"}


def test_variant_choices_are_tracked_and_named(tmp_path, cli):
    over = ["crop=fix", "input=stack", "baseline=value", "optim=adam", "actions=three", "lr=1e-3"]
    proc = cli(TINY + ["batch_size=2"] + over, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("pgpong").experiment_id])
    p = run.data.params
    assert (p["crop.bottom"], p["input.kind"], p["baseline.kind"], p["optim.name"], p["actions.kind"]) == \
        ("185", "stack", "value", "adam", "three")
    assert p["optim.beta1"] == "0.9" and p["baseline.lr"] == "0.001" and p["D"] == "12000"
    name = run.info.run_name
    for part in ["crop=fix", "input=stack", "baseline=value", "optim=adam", "actions=three", "lr=0.001", "seed=0"]:
        assert part in name.split(","), name
    assert "train/value_loss" in run.data.metrics


EXPERIMENTS = sorted(f.stem for f in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_its_variants_for_real(tmp_path, cli, name):
    proc = cli(["-m", f"experiment={name}"] + TINY + ["batch_size=2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    exp = compose_cfg([f"experiment={name}"])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [r for r in client.search_runs([client.get_experiment_by_name(exp.tracking.experiment).experiment_id])
            if "mlflow.parentRunId" in r.data.tags]
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    if name == "crop_fix":
        assert sorted(r.data.params["crop.bottom"] for r in runs) == ["185", "195"]
        assert {r.data.params["lr"] for r in runs} == {"0.001"}
    if name == "staleness":
        assert sorted(r.data.params["env.vector"] for r in runs) == ["False", "True"]
        assert {r.data.params["lr"] for r in runs} == {"0.001"}
