"""The wheel carries everything a run needs: installed outside the checkout, it trains, runs a
multirun and a sweep from an empty folder, with the user's own config folder and sweep spec."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
TINY = ["episodes=2", "batch_size=1", "H=8", "env.max_episode_steps=60", "checkpoint_every=1", "env.num_envs=2"]


def test_every_package_folder_is_listed_in_pyproject():
    """A package folder missing from [tool.setuptools] packages would be missing from the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts)
               for top in ("pgpong", "hydra_plugins") for p in (ROOT / top).rglob("__init__.py")}
    assert folders and folders <= listed, f"not in pyproject.toml packages: {sorted(folders - listed)}"
    assert {"pgpong.conf", "pgpong.sweeps"} <= listed


def _run(cmd, cwd, env, timeout=600):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_trains_sweeps_and_reads_user_configs(tmp_path):
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONWARNINGS"] = "ignore"
    src = tmp_path / "src"      # only what the wheel is built from: no build/ left over in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("pgpong", "hydra_plugins", "conf", "sweeps"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(wheels)], tmp_path, env)
    wheel = next(wheels.glob("pgpong-*.whl"))
    # the dependencies come from this interpreter's site-packages; pgpong itself only from the wheel
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    py = str(venv / "bin" / "python")
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], tmp_path, env)

    where = _run([py, "-c", "import pgpong.paths as p; print(p.__file__); print(p.CONF_DIR); print(p.SWEEPS_DIR)"],
                 work, env).stdout.split()
    assert all(Path(w).resolve().is_relative_to(venv.resolve()) for w in where), where

    # the user's own experiment in their own config folder, and their own sweep spec by path
    (work / "mine" / "experiment").mkdir(parents=True)
    (work / "mine" / "experiment" / "small.yaml").write_text("# @package _global_\nH: 6\nlr: 2e-3\n")
    (work / "my_sweep.yaml").write_text(
        "direction: maximize\nepisodes: 2\nseeds: [0]\nobjective: {kind: final}\nreport_every: 1\n"
        "pruner: {name: none}\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-3, log: true}\n")

    tiny = [t for t in TINY if not t.startswith("H=")]
    run = _run([py, "-m", "pgpong.run", "--config-dir", "mine", "experiment=small", *tiny,
                "hydra.run.dir=out/single"], work, env)
    assert "2 episodes" in run.stderr
    job = _run([py, "-m", "pgpong.run", "--config-dir", "mine", "experiment=small", *tiny, "--cfg", "job"],
               work, env).stdout
    assert "H: 6" in job and "lr: 0.002" in job
    _run([py, "-m", "pgpong.run", "-m", "seed=0,1", *TINY, "hydra.sweep.dir=out/multi"], work, env)
    assert len(list((work / "out" / "multi").glob("*/model.npz"))) == 2
    per_trial = [t for t in tiny if not t.startswith("episodes")]      # lr_h samples lr, H and crop
    _run([py, "-m", "pgpong.sweep", "sweep=lr_h", "n_trials=1", "episodes=2", *per_trial], work, env)
    _run([py, "-m", "pgpong.sweep", "sweep=my_sweep.yaml", "n_trials=1", *per_trial], work, env)
    assert (work / "outputs" / "sweeps" / "my_sweep" / "best_params.yaml").is_file()
    assert (work / "mlflow.db").is_file() and (work / "optuna.db").is_file()
