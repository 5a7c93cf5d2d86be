"""Shared fixtures: the real Hydra config composed from conf/, shrunk to seconds."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pgpong import config, launch
from pgpong.engine.envs import draw_env_seeds
from pgpong.paths import CONF_DIR as _CONF_DIR

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(_CONF_DIR)
config.register()   # the schemas and launchers, for tests that compose with Hydra's own API

# A tiny but real budget: short truncated episodes on the real emulator (two emulators on the
# default vector path: starting its 16 costs seconds per run). Long enough for points: Pong's
# first point falls at agent step 64 (frameskip 4), so every episode has non-zero rewards, a
# non-zero gradient, and every update moves the weights (at 60 steps none of that happened).
TINY_STEPS = 200
TINY = ["episodes=2", "batch_size=1", "H=8", f"env.max_episode_steps={TINY_STEPS}", "checkpoint_every=1",
        "env.num_envs=2"]


def compose_cfg(overrides=()):
    """The real composed config (conf/ + schema) with overrides, as the app would see it (not validated)."""
    return launch.compose(overrides, validate=False)


def initial_params(cfg) -> dict:
    """The weights a run of cfg starts from (its env seeds are drawn first, as pgpong.run does)."""
    from pgpong.engine.state import new_state
    rng = np.random.default_rng(cfg.seed)
    draw_env_seeds(rng, cfg.env.num_envs)
    return new_state(cfg, rng).params


def assert_learned(params: dict, cfg) -> None:
    """Every weight array of a trained model differs from where cfg's run started, and is finite."""
    start = initial_params(cfg)
    assert set(params) == set(start)
    for k, w in params.items():
        assert np.isfinite(w).all(), k
        assert not np.array_equal(w, start[k]), f"{k} never moved: no learning signal"


@pytest.fixture
def cfg_factory():
    return compose_cfg


def run_cli(args, cwd, timeout=300, env=None, module="pgpong.run"):
    """Run `python -m <module> args` for real in cwd; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env.setdefault("PYTHONWARNINGS", "ignore")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture
def cli():
    return run_cli
