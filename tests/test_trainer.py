"""The training loop on the real emulator with tiny budgets."""
import numpy as np

from pgpong.engine.envs import seeded_envs
from pgpong.engine.trainer import new_state, train
from pgpong.tracking.tracker import NullTracker
from tests.conftest import TINY, compose_cfg


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
    over = ["episodes=4", "env.max_episode_steps=300"]
    _, a = tiny_train(tmp_path / "a", over)
    _, b = tiny_train(tmp_path / "b", over)
    _, c = tiny_train(tmp_path / "c", over + ["seed=1"])
    assert a["rewards"] == b["rewards"]
    assert a["steps"] == b["steps"]
    assert (a["rewards"], a["steps"]) != (c["rewards"], c["steps"])


def test_update_every_batch_size_episodes_changes_weights(tmp_path):
    cfg = compose_cfg(TINY + ["episodes=4", "batch_size=2", "env.max_episode_steps=300"])
    rng = np.random.default_rng(0)
    rng.integers(0, 2**31 - 1, size=cfg.env.num_envs)  # the env seeds, drawn first as in tiny_train
    before = new_state(cfg, rng).params                # so these are train()'s initial weights
    _, no_update = tiny_train(tmp_path / "none", ["episodes=1", "batch_size=2"])
    from pgpong.engine import checkpoint
    np.testing.assert_array_equal(checkpoint.load(no_update["model_path"])[0]["W1"], before["W1"])
    tracker = RecordingTracker()
    _, summary = tiny_train(tmp_path, ["episodes=4", "batch_size=2", "env.max_episode_steps=300"], tracker)
    assert summary["updates"] == 2
    updates = [m["train/update"] for _, m in tracker.points if "train/update" in m]
    assert updates == [1, 2]
    steps = [s for s, _ in tracker.points]
    assert steps == [1, 2, 3, 4]                      # one point per episode, episode index as step
    arrays, meta = checkpoint.load(summary["model_path"])
    assert meta["episode"] == 4
    assert not np.allclose(arrays["W1"], before["W1"])


def test_episode_metrics_are_consistent(tmp_path):
    tracker = RecordingTracker()
    cfg, summary = tiny_train(tmp_path, ["episodes=3", "env.groups=1"], tracker)
    running = None
    for step, m in tracker.points:
        assert m["episode/length"] == 60              # env.max_episode_steps truncates
        running = m["episode/reward"] if running is None else 0.99 * running + 0.01 * m["episode/reward"]
        assert m["episode/running_reward"] == running
    assert summary["running_reward"] == running
    # one vector env: every env's episodes end together at 60 steps: episodes 1-2, then 3 (and a 4th not learned)
    n = cfg.env.num_envs
    assert summary["steps"] == -(-3 // n) * 60 * n
