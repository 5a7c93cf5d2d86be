"""Rollout bookkeeping: each env's episodes read back exactly, however the step ring grows."""
import numpy as np

from pgpong.core import policy
from pgpong.core.preprocess import crop_window
from pgpong.engine.rollout import Rollout
from tests.conftest import compose_cfg


def random_frames(rng, n):
    """Grayscale screens: background 87 with scattered foreground pixels."""
    f = np.full((n, 210, 160), 87, np.uint8)
    f[rng.random((n, 210, 160)) < 0.01] = 236
    return f


def run(capacity, steps=60, n=3):
    cfg = compose_cfg(["H=6"])
    rng = np.random.default_rng(0)
    params = policy.init_params(rng, 6400, 6, "two", False, np.float32)
    data = np.random.default_rng(1)
    ro = Rollout(random_frames(data, n), crop_window(cfg.crop), cfg.input.kind, cfg.actions.kind, 6, np.float32,
                 capacity=capacity)
    episodes = []
    for t in range(steps):
        ro.act(params, rng, version=t // 10)
        ro.record_acts()
        dones = data.random(n) < 0.08
        dones[0] = t == 40                                       # env 0: one 41-step episode
        rewards = data.choice([0.0, 0.0, 1.0, -1.0], size=n)
        episodes += ro.record_step(random_frames(data, n), rewards, dones)
    return episodes


def test_episodes_read_back_the_same_whatever_the_ring_capacity():
    small, large = run(capacity=2), run(capacity=4096)            # the small ring doubles 5 times
    assert [i for i, _ in small] == [i for i, _ in large] and len(small) >= 5
    for (_, a), (_, b) in zip(small, large):
        assert len(a) == len(b)
        for field in ("hs", "dlogps", "p_up", "rewards", "version"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        for x, y in zip(a.idx + a.val, b.idx + b.val):
            np.testing.assert_array_equal(x, y)


def test_an_episodes_steps_are_its_own_envs():
    eps = run(capacity=8)
    first = [e for i, e in eps if i == 0][0]
    assert len(first) == 41
    assert first.idx[0].size == 0                                 # first step: zero diff input
    assert not first.hs[0].any() and first.p_up[0] == 0.5
    np.testing.assert_array_equal(first.version, np.arange(41) // 10)
