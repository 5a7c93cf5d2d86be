"""Divergence for real: a huge learning rate drives the weights to inf/NaN; the run stops cleanly."""
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pgpong.engine import checkpoint
from pgpong.engine.envs import make_envs
from pgpong.engine.trainer import train
from pgpong.errors import Diverged, PgpongError
from pgpong.tracking.tracker import NullTracker
from tests.conftest import compose_cfg, run_cli

# lr=1e38: the first RMSProp step moves weights by ~lr/sqrt(1-decay) = 1e39, past float32s 3.4e38
HUGE = ["H=8", "batch_size=2", "env.max_episode_steps=250", "lr=1e38", "episodes=30", "checkpoint_every=1"]


@pytest.mark.parametrize("path", [["env.num_envs=2"], ["env.vector=false", "env.num_envs=1"]], ids=["vector", "gym"])
def test_a_huge_learning_rate_raises_diverged_naming_what_went_bad(tmp_path, path):
    cfg = compose_cfg(HUGE + path + ["tracking=none"])
    rng = np.random.default_rng(cfg.seed)
    envs = make_envs(cfg.env, [3, 4][:cfg.env.num_envs])
    with pytest.raises(Diverged, match=r"diverged at episode \d+: .* holds NaN or inf") as e:
        train(cfg, envs, NullTracker(), rng, tmp_path)
    envs.close()
    assert isinstance(e.value, PgpongError)           # a sweep driver can catch either
    for p in checkpoint.list_checkpoints(tmp_path / "checkpoints"):   # every kept file is good
        arrays, _ = checkpoint.load(p)
        assert all(np.all(np.isfinite(a)) for k, a in arrays.items() if a.dtype.kind == "f")


def test_a_diverged_run_is_failed_in_mlflow_with_the_reason_and_a_one_line_error(tmp_path):
    # the default (vector) path; two envs end episodes 1-2 together (checkpoint), 3-4 (update: NaN)
    r = run_cli(HUGE + ["env.num_envs=2", "batch_size=4"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: diverged at episode") and "last good checkpoint is kept" in last
    (run,) = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(["1"])
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].startswith("diverged at episode")
    (folder,) = tmp_path.glob("outputs/*/*/checkpoints")
    arrays, meta = checkpoint.load(checkpoint.latest(folder))
    assert np.all(np.isfinite(arrays["param.W1"])) and meta["episode"] >= 1
