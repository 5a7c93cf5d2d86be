"""The training loop on the real emulator with tiny budgets."""
import numpy as np
import pytest

from pgpong.engine import checkpoint
from pgpong.engine.envs import seeded_envs
from pgpong.engine.trainer import train
from pgpong.tracking.tracker import NullTracker
from tests.conftest import TINY, TINY_STEPS, assert_learned, compose_cfg, initial_params
from tests.gist_reference import GIST


class RecordingTracker(NullTracker):
    """Keeps what the trainer logs (a tracker is a collaborator: the trainer never sees MLflow)."""
    def __init__(self):
        self.points = []

    def log_metrics(self, metrics, step):
        self.points.append((step, dict(metrics)))


def tiny_train(tmp_path, overrides=(), tracker=None):
    cfg = compose_cfg(TINY + list(overrides))
    rng, envs = seeded_envs(cfg)
    try:
        return cfg, train(cfg, envs, tracker or NullTracker(), rng, tmp_path)
    finally:
        envs.close()


def test_same_seed_same_rewards(tmp_path):
    over = ["episodes=4"]
    _, a = tiny_train(tmp_path / "a", over)
    _, b = tiny_train(tmp_path / "b", over)
    _, c = tiny_train(tmp_path / "c", over + ["seed=1"])
    assert a["rewards"] == b["rewards"]
    assert a["steps"] == b["steps"]
    assert (a["rewards"], a["steps"]) != (c["rewards"], c["steps"])


def test_update_every_batch_size_episodes_changes_weights(tmp_path):
    cfg = compose_cfg(TINY + ["episodes=4", "batch_size=2"])
    before = initial_params(cfg)
    _, no_update = tiny_train(tmp_path / "none", ["episodes=1", "batch_size=2"])
    np.testing.assert_array_equal(checkpoint.load(no_update["model_path"])[0]["W1"], before["W1"])
    tracker = RecordingTracker()
    _, summary = tiny_train(tmp_path / "four", ["episodes=4", "batch_size=2"], tracker)
    assert summary["updates"] == 2
    updates = [m["train/update"] for _, m in tracker.points if "train/update" in m]
    assert updates == [1, 2]
    steps = [s for s, _ in tracker.points]
    assert steps == [1, 2, 3, 4]                      # one point per episode, episode index as step
    arrays, meta = checkpoint.load(summary["model_path"])
    assert meta["episode"] == 4
    assert_learned(arrays, cfg)


def test_an_update_moves_the_weights_by_the_gists_rmsprop_step_of_the_batch_gradient(tmp_path):
    # Two envs (one per group) cut together at TINY_STEPS: the same two episodes, acted with the
    # initial weights, learned with batch_size=3 (no update: the end checkpoint holds their summed
    # gradient) and with batch_size=2 (one update, of that gradient).
    _, held = tiny_train(tmp_path / "held", ["batch_size=3"])
    cfg, updated = tiny_train(tmp_path / "updated", ["batch_size=2"])
    arrays, meta = checkpoint.load(checkpoint.latest(tmp_path / "held" / "checkpoints"))
    assert (meta["batch_episodes"], meta["updates"], updated["updates"]) == (2, 0, 1)
    assert held["rewards"] == updated["rewards"] and any(held["rewards"])
    start, after = initial_params(cfg), checkpoint.load(updated["model_path"])[0]
    for k, w0 in start.items():
        g = arrays[f"grad.{k}"].astype(np.float64)
        assert np.abs(g).max() > 0, k
        cache = (1 - GIST["decay_rate"]) * g ** 2                    # RMSProp's cache after its first step
        expected = w0 + GIST["lr"] * g / (np.sqrt(cache) + GIST["eps"])
        np.testing.assert_allclose(after[k], expected, rtol=1e-6, atol=1e-9, err_msg=k)
        assert not np.array_equal(after[k], w0), k


def test_episode_metrics_are_consistent(tmp_path):
    tracker = RecordingTracker()
    cfg, summary = tiny_train(tmp_path, ["episodes=3", "env.groups=1"], tracker)
    running = None
    for step, m in tracker.points:
        assert m["episode/length"] == TINY_STEPS      # env.max_episode_steps truncates
        assert m["episode/reward"] < 0 and m["train/grad_norm"] > 0   # points lost: something to learn
        running = m["episode/reward"] if running is None else 0.99 * running + 0.01 * m["episode/reward"]
        assert m["episode/running_reward"] == pytest.approx(running, rel=1e-12)   # the gist's EMA
    assert summary["running_reward"] == pytest.approx(running, rel=1e-12)
    # one vector env: every env's episodes end together: episodes 1-2, then 3 (and a 4th not learned)
    n = cfg.env.num_envs
    assert summary["steps"] == -(-3 // n) * TINY_STEPS * n
    assert_learned(checkpoint.load(summary["model_path"])[0], cfg)
