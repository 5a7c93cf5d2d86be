"""Shared fixtures: the real Hydra config composed from conf/, shrunk to seconds."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from pgpong import config

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(ROOT / "conf")
config.register()

# A tiny but real budget: short truncated episodes on the real emulator (two emulators on the
# default vector path: starting its 16 costs seconds per run).
TINY = ["episodes=2", "batch_size=1", "H=8", "env.max_episode_steps=60", "checkpoint_every=1", "env.num_envs=2"]


def compose_cfg(overrides=()):
    """The real composed config (conf/ + schema) with overrides, as the app would see it."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


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
