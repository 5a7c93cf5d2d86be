"""Rollout bookkeeping: each env's episodes read back exactly, however the step ring grows."""
import numpy as np

from pgpong.core import policy
from pgpong.core.preprocess import binarize_batch, crop_window, sparse_input
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


def test_inputs_read_back_equal_each_steps_own_input_after_the_rings_wrapped_and_grew():
    """Short episodes first (the flat ring of inputs wraps many times), then env 0's long one (it
    must grow with live inputs sitting across its end): every finished and in-flight episode's
    inputs equal those made independently, step by step, from each env's binarized frames."""
    cfg = compose_cfg(["H=6"])
    window = crop_window(cfg.crop)
    rng, data = np.random.default_rng(0), np.random.default_rng(2)
    params = policy.init_params(rng, 6400, 6, "two", False, np.float32)
    n, steps = 3, 400
    frames = random_frames(data, n)
    ro = Rollout(frames, window, "diff", "two", 6, np.float32, capacity=2)
    prev, inputs, finished = [None] * n, [[] for _ in range(n)], []
    for t in range(steps):
        cur = list(binarize_batch(frames, window))               # the plain path (the rollout reads words)
        for i in range(n):                                       # the input each env acts on now
            inputs[i].append(sparse_input(cur[i], prev[i], "diff"))
        ro.act(params, rng, version=0)
        ro.record_acts()
        dones = data.random(n) < 0.1
        dones[0] = t < 200 and t % 7 == 6                        # env 0: 7-step episodes, then one of 200 steps
        frames = random_frames(data, n)
        for i, ep in ro.record_step(frames, np.zeros(n), dones):
            finished.append((inputs[i][:len(ep)], ep))
        prev = [None if d else c for d, c in zip(dones, cur)]
        for i in np.flatnonzero(dones):
            inputs[i] = inputs[i][len(inputs[i]):]
    assert len(ro._cols) > 128 and sum(len(ep) for _, ep in finished) > 900   # grown, wrapped many times
    finished += [(inputs[i], ep) for i, ep in enumerate(ro.in_flight())]
    assert max(len(ep) for _, ep in finished) >= 200
    for expected, ep in finished:
        assert len(expected) == len(ep)
        for (idx, val), got_idx, got_val in zip(expected, ep.idx, ep.val):
            np.testing.assert_array_equal(got_idx, idx)
            np.testing.assert_array_equal(got_val, val)
