"""The environment adapters on the real emulator: the vector path's episodes are gymnasium's."""
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from pgpong.core.preprocess import binarize_batch, crop_window
from pgpong.engine import envs as envs_module
from pgpong.engine.envs import GymEnvs, VectorEnvs, make_envs, seeded_envs, usable_cores
from pgpong.engine.trainer import train
from pgpong.errors import PgpongError
from pgpong.tracking.tracker import NullTracker
from tests.conftest import compose_cfg


def env_cfg(overrides):
    return compose_cfg(overrides).env


def test_default_env_is_the_vector_path():
    cfg = compose_cfg()
    assert cfg.env.vector and cfg.env.id == "ALE/Pong-v5"
    assert (cfg.env.num_envs, cfg.env.num_threads, cfg.env.groups) == (16, 0, 2)   # 0: the cores shared by the groups
    assert not compose_cfg(["env=pong_v0"]).env.vector


@pytest.mark.parametrize("overrides,cores,expected", [
    ([], 2, 1),                                       # 2 groups on 2 cores: a thread each
    ([], 8, 4),
    ([], 1, 1),                                       # at least one
    (["env.groups=1"], 8, 8),
    (["env.num_envs=4"], 16, 2),                      # never more than a group's emulators
    (["env.num_threads=3"], 2, 3),                    # a number given is used as it is
])
def test_emulator_threads_default_to_a_thread_per_core_in_all(monkeypatch, overrides, cores, expected):
    monkeypatch.setattr(envs_module, "usable_cores", lambda: cores)
    assert envs_module.emulator_threads(env_cfg(overrides)) == expected


def test_vector_env_episodes_equal_gymnasium_envs_step_for_step():
    """Same per-env action sequences, sticky actions off (so the emulators are deterministic):
    identical frames after binarization, rewards, done flags and resets, per env, across a
    natural game end and truncations."""
    overrides = ["env.repeat_action_probability=0.0", "env.num_envs=2"]
    vec = VectorEnvs(env_cfg(overrides + ["env.max_episode_steps=400"]), [0, 1])
    gyms = [GymEnvs(env_cfg(overrides + ["env.vector=false", "env.num_envs=1", "env.max_episode_steps=400"]), [s])
            for s in (0, 1)]
    long_vec = VectorEnvs(env_cfg(overrides + ["env.num_envs=1", "env.groups=1"]), [0])   # no cap: a game to its end
    long_gym = GymEnvs(env_cfg(overrides + ["env.vector=false", "env.num_envs=1"]), [0])
    window = crop_window(compose_cfg().crop)
    rng = np.random.default_rng(5)
    try:
        fv = binarize_batch(vec.reset(), window)
        fg = binarize_batch(np.concatenate([g.reset() for g in gyms]), window)
        np.testing.assert_array_equal(fv, fg)
        np.testing.assert_array_equal(binarize_batch(long_vec.reset(), window), binarize_batch(long_gym.reset(), window))
        sums_v, sums_g, dones = np.zeros(2), np.zeros(2), np.zeros(2, int)
        game_over_at = None
        for t in range(1400):
            a = rng.integers(2, 4, size=2)
            frames, r, d = vec.step(a)
            out = [g.step([ai]) for g, ai in zip(gyms, a)]
            np.testing.assert_array_equal(binarize_batch(frames, window),
                                          binarize_batch(np.concatenate([o[0] for o in out]), window))
            np.testing.assert_array_equal(r, [o[1][0] for o in out])
            np.testing.assert_array_equal(d, [o[2][0] for o in out])
            sums_v += r
            sums_g += [o[1][0] for o in out]
            dones += d
            if game_over_at is None:
                lf, lr, ld = long_vec.step(a[:1])
                gf, gr, gd = long_gym.step(a[:1])
                np.testing.assert_array_equal(binarize_batch(lf, window), binarize_batch(gf, window))
                assert (lr[0], ld[0]) == (gr[0], gd[0])
                if ld[0]:
                    game_over_at = t
        np.testing.assert_array_equal(sums_v, sums_g)
        assert dones.tolist() == [3, 3]                  # truncated at steps 400, 800, 1200 in both envs
        assert sums_v.min() < 0                          # points were lost
        assert game_over_at is not None and game_over_at > 500   # a whole game: 21 points
    finally:
        for e in (vec, long_vec, long_gym, *gyms):
            e.close()


def test_vector_env_keeps_each_envs_episodes_apart():
    """Envs truncated at different steps: each env's dones, resets and reward sums are its own."""
    vec = VectorEnvs(env_cfg(["env.num_envs=3", "env.groups=1", "env.max_episode_steps=30"]), [7, 8, 9])
    try:
        first = vec.reset()
        lengths = [[] for _ in range(3)]
        t = np.zeros(3, int)
        for step in range(95):
            frames, rewards, dones = vec.step(np.array([2, 3, 2]))
            t += 1
            for i in np.flatnonzero(dones):
                lengths[i].append(int(t[i]))
                t[i] = 0
                np.testing.assert_array_equal(frames[i], first[i])   # the next episode starts at once
        assert lengths == [[30, 30, 30]] * 3
    finally:
        vec.close()


def test_vector_env_is_deterministic_for_a_seed_whatever_the_threads():
    def rollout(threads):
        vec = VectorEnvs(env_cfg(["env.num_envs=4", f"env.num_threads={threads}", "env.max_episode_steps=50"]),
                         [11, 12, 13, 14])
        rng = np.random.default_rng(0)
        try:
            frames = [vec.reset()]
            out = []
            for _ in range(120):
                f, r, d = vec.step(rng.integers(2, 4, size=4))
                frames.append(f)
                out.append((r, d))
            return np.stack(frames), out
        finally:
            vec.close()
    f1, o1 = rollout(2)
    f2, o2 = rollout(1)
    np.testing.assert_array_equal(f1, f2)
    for (r1, d1), (r2, d2) in zip(o1, o2):
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)


@pytest.mark.parametrize("groups", [1, 2])
def test_training_on_the_vector_path_is_deterministic_for_a_seed(tmp_path, groups):
    def run(i):
        cfg = compose_cfg(["episodes=12", "batch_size=3", "H=8", "env.num_envs=4", "env.max_episode_steps=150",
                           "checkpoint_every=1000", f"env.groups={groups}"])
        rng, envs = seeded_envs(cfg)
        seen = []
        try:
            summary = train(cfg, envs, NullTracker(), rng, tmp_path / str(i), callbacks=[lambda e, m: seen.append((e, m))])
        finally:
            envs.close()
        return summary, seen
    (s1, seen1), (s2, seen2) = run(1), run(2)
    assert s1["rewards"] == s2["rewards"] and len(s1["rewards"]) == 12
    learned = lambda seen: [{k: v for k, v in m.items() if not k.startswith("time/")} for _, m in seen]
    assert learned(seen1) == learned(seen2)
    assert any(m.get("train/grad_norm", 0) > 0 for _, m in seen1) and any(s1["rewards"])
    # four envs end their episodes at the same step: each gets its own episode index
    assert [e for e, _ in seen1] == list(range(1, 13))
    assert all(m["episode/length"] == 150 for _, m in seen1)
    stale = [m["train/stale_step_fraction"] for _, m in seen1 if "train/update" in m]
    assert len(stale) == 4 and all(0 <= f <= 1 for f in stale)
    assert max(stale) > 0              # episodes acted before an earlier update of the same step


def test_single_env_path_has_almost_no_stale_steps(tmp_path):
    cfg = compose_cfg(["env=pong_v0", "episodes=4", "batch_size=2", "H=8", "env.max_episode_steps=50"])
    rng = np.random.default_rng(cfg.seed)
    envs = make_envs(cfg.env, [123])
    seen = []
    try:
        train(cfg, envs, NullTracker(), rng, tmp_path, callbacks=[lambda e, m: seen.append(m)])
    finally:
        envs.close()
    stale = [m["train/stale_step_fraction"] for m in seen if "train/update" in m]
    # only the first step of the episode after an update was acted before it (its input is zero)
    assert stale == [0.0, 1 / 100]


def test_groups_must_divide_the_envs():
    from pgpong.config import validate
    with pytest.raises(PgpongError, match="env.groups=3: must be a positive divisor of env.num_envs=16"):
        validate(compose_cfg(["env.groups=3"]))


def test_vector_env_describes_its_resolved_settings():
    vec = VectorEnvs(env_cfg(["env.num_envs=2", "env.max_episode_steps=60"]), [1, 2])
    wide = VectorEnvs(env_cfg(["env.num_envs=4", "env.groups=1"]), [1, 2, 3, 4])
    try:
        d, d_wide = vec.describe(), wide.describe()
    finally:
        vec.close()
        wide.close()
    assert (d_wide["env.resolved.groups"], d_wide["env.resolved.num_threads"]) == (1, min(usable_cores(), 4))
    assert d["env.resolved.id"] == "ALE/Pong-v5"
    assert d["env.resolved.frameskip"] == 4
    assert d["env.resolved.repeat_action_probability"] == 0.25
    assert d["env.resolved.max_num_frames_per_episode"] == 240
    # two groups of one env each: one thread per group is all that can work
    assert (d["env.resolved.num_envs"], d["env.resolved.groups"], d["env.resolved.num_threads"]) == (2, 2, 1)
    assert d["env.resolved.frames"] == "grayscale"


def thread_nices() -> dict:
    """{thread id: nice value} of this process's threads (Linux's /proc)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        stat = (task / "stat").read_text()
        out[int(task.name)] = int(stat.rsplit(")", 1)[1].split()[16])   # field 19: nice
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="nice values are per thread on Linux only")
def test_the_emulator_threads_run_env_emulator_nice_nicer_than_the_thread_that_made_them():
    me = threading.get_native_id()
    mine = os.getpriority(os.PRIO_PROCESS, me)
    before = thread_nices()
    vec = VectorEnvs(env_cfg(["env.num_envs=4", "env.groups=2", "env.num_threads=2", "env.emulator_nice=3"]),
                     [1, 2, 3, 4])
    try:
        vec.reset()                                              # its helper threads have ended
        started = {tid: nice for tid, nice in thread_nices().items() if tid not in before}
        frames, rewards, dones = vec.step(np.full(4, 2))        # they still step
        assert frames.shape == (4, 210, 160)
    finally:
        vec.close()
    assert len(started) >= 4 and set(started.values()) == {min(19, mine + 3)}    # 2 groups x 2 threads
    assert os.getpriority(os.PRIO_PROCESS, me) == mine                           # this thread as it was
    assert vec.describe()["env.resolved.emulator_nice"] == 3


def test_vector_path_refuses_a_random_frameskip():
    with pytest.raises(PgpongError, match="env.vector=true.*fixed frameskip"):
        VectorEnvs(env_cfg(["env=pong_v0", "env.vector=true"]), [1])


def steps_after_reset(cfg, seeds, reseed=None, early=True, steps: int = 60) -> np.ndarray:
    """Frames of `steps` agent steps with fixed actions after reset (sticky actions draw on each env's
    seed), of VectorEnvs(cfg, seeds), reseeded first if asked; early=False drops the reset begun
    while the groups were made, so reset runs on this thread."""
    vec = VectorEnvs(cfg, seeds)
    try:
        if not early:
            for g in vec.groups:
                g._collect_reset()
        if reseed is not None:
            vec.reseed(reseed)
        frames = [vec.reset()]
        for t in range(steps):
            frames.append(vec.step(np.full(len(seeds), 2 + t % 2))[0])
        return np.stack(frames)
    finally:
        vec.close()


def test_the_reset_begun_while_the_next_group_is_made_is_the_seeded_reset_and_yields_to_a_reseed():
    """Each group's seeded reset starts beside the making of the next group; a reseed before
    `reset` (a resumed run) must still give the new seeds' episodes, not the early reset's."""
    cfg = env_cfg(["env.num_envs=4", "env.groups=2", "env.num_threads=1"])
    want_new = steps_after_reset(cfg, [5, 6, 7, 8], early=False)
    got_early = steps_after_reset(cfg, [5, 6, 7, 8])
    got_reseeded = steps_after_reset(cfg, [1, 2, 3, 4], reseed=[5, 6, 7, 8])
    got_other = steps_after_reset(cfg, [1, 2, 3, 4])
    assert not np.array_equal(got_other, want_new)          # the seeds matter within 60 steps
    np.testing.assert_array_equal(got_early, want_new)
    np.testing.assert_array_equal(got_reseeded, want_new)
