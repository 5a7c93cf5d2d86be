"""Exact resume: N episodes, checkpoint, a fresh process state restored, N more == 2N straight.

Exact on the gymnasium path (env=pong_v0, or any env with env.vector=false), whose emulators
are saved. The vector path (AtariVectorEnv, the default) cannot save its emulators: there the
training state is restored exactly and the episodes in flight start over (tested for what that
keeps identical).
"""
import dataclasses

import numpy as np
import pytest
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

from pgpong import config
from pgpong.engine import checkpoint
from pgpong.engine.envs import make_envs, seeded_envs
from pgpong.engine.state import TrainState, new_state, restore_state
from pgpong.engine.trainer import train
from pgpong.errors import Interrupted, PgpongError
from pgpong.run import resume_config
from pgpong.tracking.tracker import NullTracker
from tests.conftest import compose_cfg, run_cli

# 250 steps: long enough for points to be scored (at 60 steps every reward is 0, every gradient 0,
# and the weights would never move, so a broken resume could not be told from a good one)
BASE = ["H=8", "batch_size=3", "env.max_episode_steps=250", "checkpoint_every=2", "tracking=none", "seed=5"]
EXACT = {"pong_v0": ["env=pong_v0"], "pong_v5": ["env=pong_v5", "env.vector=false", "env.num_envs=1"]}


def straight(cfg, out_dir):
    return trained(cfg, out_dir)[0]


def trained(cfg, out_dir):
    """(summary, the TrainState the run ended with: what its end checkpoint holds)."""
    rng, envs = seeded_envs(cfg)   # as pgpong.run does
    state = new_state(cfg, rng)    # as train() makes it
    try:
        with threadpool_limits(limits=1):
            return train(cfg, envs, NullTracker(), rng, out_dir, state=state), state
    finally:
        envs.close()


def restored_state(cfg, ckpt_path):
    """The TrainState restore_state reads from a checkpoint (envs made and closed as pgpong.run would)."""
    arrays, meta = checkpoint.load(ckpt_path)
    rng, envs = seeded_envs(cfg)
    try:
        return restore_state(cfg, arrays, meta, rng, envs, ckpt_path)[0]
    finally:
        envs.close()


def assert_same_state(restored: TrainState, original: TrainState) -> None:
    """Every field of the training state equal, exactly: weights, optimizer memory, batch gradient,
    counters, batch sums, running reward and every episode's reward."""
    for f in dataclasses.fields(TrainState):
        a, b = getattr(restored, f.name), getattr(original, f.name)
        if isinstance(b, dict):
            assert a.keys() == b.keys(), f.name
            for k in b:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{f.name}[{k}]")
                assert a[k].dtype == b[k].dtype, f"{f.name}[{k}]"
        else:
            assert a == b, f"{f.name}: restored {a!r}, saved {b!r}"
    assert original.running is not None and any(original.rewards)


def resumed(cfg, ckpt_path, out_dir):
    """A new generator and new emulators, put back to where the checkpoint left them."""
    arrays, meta = checkpoint.load(ckpt_path)
    rng, envs = seeded_envs(cfg)   # as pgpong.run does
    try:
        state, live = restore_state(cfg, arrays, meta, rng, envs, ckpt_path)
        with threadpool_limits(limits=1):
            return train(cfg, envs, NullTracker(), rng, out_dir, state=state, live=live)
    finally:
        envs.close()


def final_weights(summary):
    arrays, _ = checkpoint.load(summary["model_path"])
    return arrays


@pytest.mark.parametrize("env", ["pong_v0", "pong_v5"])
def test_stopping_after_n_episodes_and_resuming_gives_the_uninterrupted_run(tmp_path, env):
    # 5 episodes with batch_size=3: the checkpoint holds a half-filled gradient buffer
    full = straight(compose_cfg(BASE + EXACT[env] + ["episodes=10"]), tmp_path / "full")
    first, first_state = trained(compose_cfg(BASE + EXACT[env] + ["episodes=5"]), tmp_path / "a")
    ckpt = checkpoint.latest(tmp_path / "a" / "checkpoints")
    assert checkpoint.load(ckpt)[1]["episode"] == 5 and checkpoint.load(ckpt)[1]["batch_episodes"] == 2
    assert_same_state(restored_state(compose_cfg(BASE + EXACT[env] + ["episodes=10"]), ckpt), first_state)
    second = resumed(compose_cfg(BASE + EXACT[env] + ["episodes=10"]), ckpt, tmp_path / "b")
    assert len(set(full["rewards"])) > 1                  # the rewards say something
    assert first["rewards"] == full["rewards"][:5]
    assert second["rewards"] == full["rewards"] and second["running_reward"] == full["running_reward"]
    assert second["steps"] == full["steps"] and second["updates"] == full["updates"] == 3
    for k, w in final_weights(full).items():
        np.testing.assert_array_equal(final_weights(second)[k], w, err_msg=k)


@pytest.mark.parametrize("env", ["pong_v0", "pong_v5"])
def test_stopping_in_the_middle_of_an_episode_and_resuming_gives_the_uninterrupted_run(tmp_path, env):
    cfg = compose_cfg(BASE + EXACT[env] + ["episodes=6", "actions=three", "optim=adam"])
    full = straight(cfg, tmp_path / "full")
    steps = []

    def stop():   # stop 400 steps in: episode 2, step 150 of 250 (a mid-episode, mid-batch state)
        steps.append(1)
        return "SIGTERM" if len(steps) == 400 else None

    rng, envs = seeded_envs(cfg)   # as pgpong.run does
    state = new_state(cfg, rng)
    with pytest.raises(Interrupted) as e:
        train(cfg, envs, NullTracker(), rng, tmp_path / "a", stop=stop, state=state)
    envs.close()
    assert_same_state(restored_state(cfg, e.value.checkpoint), state)
    assert e.value.episode == 1
    arrays, meta = checkpoint.load(e.value.checkpoint)
    # 150 steps of episode 2 taken, and the 151st chosen and sent (saved with its action)
    assert meta["steps"] == 400 and arrays["env0.rewards"].shape == (151,) and arrays["env0.rewards"].any()
    assert arrays["group0.actions"].shape == (1,)
    second = resumed(cfg, e.value.checkpoint, tmp_path / "b")
    assert len(set(full["rewards"])) > 1
    assert second["rewards"] == full["rewards"] and second["running_reward"] == full["running_reward"]
    for k, w in final_weights(full).items():
        np.testing.assert_array_equal(final_weights(second)[k], w, err_msg=k)


def test_episodes_that_end_together_past_the_target_are_learned_first_on_resume(tmp_path):
    # two envs whose episodes are all cut at 250 steps end together: the 5-episode run stops with
    # episode 6 finished but not learned; its end checkpoint keeps it for a longer run
    base = BASE + ["env=pong_v0", "env.num_envs=2"]
    full = straight(compose_cfg(base + ["episodes=10"]), tmp_path / "full")
    _, first_state = trained(compose_cfg(base + ["episodes=5"]), tmp_path / "a")
    ckpt = checkpoint.latest(tmp_path / "a" / "checkpoints")
    arrays, meta = checkpoint.load(ckpt)
    assert meta["episode"] == 5 and meta["leftover"] == 1 and arrays["left0.rewards"].shape == (250,)
    assert_same_state(restored_state(compose_cfg(base + ["episodes=10"]), ckpt), first_state)
    second = resumed(compose_cfg(base + ["episodes=10"]), ckpt, tmp_path / "b")
    assert len(set(full["rewards"])) > 1
    assert second["rewards"] == full["rewards"] and second["steps"] == full["steps"]
    for k, w in final_weights(full).items():
        np.testing.assert_array_equal(final_weights(second)[k], w, err_msg=k)


VECTOR = BASE + ["env=pong_v5", "env.num_envs=2"]


@pytest.mark.parametrize("groups", [1, 2])
def test_vector_path_resume_restores_the_training_state_exactly_and_goes_on_deterministically(tmp_path, groups):
    # AtariVectorEnv's emulators cannot be saved: the checkpoint holds weights, optimizer, batch
    # gradient, counters, rewards, the generator and the finished-but-unlearned episodes; the
    # episodes in flight start over on seeds drawn from (seed, steps).
    # One group: both envs' episodes end at step 250, 500: the 3-episode run stops with episode 4
    # finished but unlearned (kept). Two groups of one env, stepped in turn: it stops right after
    # group 0's second episode, group 1 one step short of its own.
    vector = VECTOR + [f"env.groups={groups}"]
    full = straight(compose_cfg(vector + ["episodes=8"]), tmp_path / "full")
    first, first_state = trained(compose_cfg(vector + ["episodes=3"]), tmp_path / "a")
    ckpt = checkpoint.latest(tmp_path / "a" / "checkpoints")
    arrays, meta = checkpoint.load(ckpt)
    leftover, steps = {1: (1, 2 * 500), 2: (0, 500 + 499)}[groups]
    assert meta["episode"] == 3 and meta["leftover"] == leftover and meta["envs"] is None
    assert meta["groups"] == [2 // groups] * groups
    assert not any(k.startswith(("env0.", "group0.")) for k in arrays)     # nothing in flight is kept
    assert first["rewards"] == full["rewards"][:3]

    cfg = compose_cfg(vector + ["episodes=8"])
    rng, envs = seeded_envs(cfg)   # as pgpong.run does
    state, _ = restore_state(cfg, arrays, meta, rng, envs, ckpt)
    envs.close()
    assert_same_state(state, first_state)
    assert (state.episode, state.steps, state.updates, state.batch_episodes) == (3, steps, 1, 0)
    assert state.rewards == full["rewards"][:3] and rng.bit_generator.state == meta["rng"]

    again = [resumed(cfg, ckpt, tmp_path / f"b{i}") for i in range(2)]
    assert again[0]["rewards"] == again[1]["rewards"]                    # the same checkpoint, the same run
    for k, w in final_weights(again[0]).items():
        np.testing.assert_array_equal(final_weights(again[1])[k], w, err_msg=k)
    # the learned episodes, and any saved unlearned, are the uninterrupted run's own
    assert again[0]["rewards"][:3 + leftover] == full["rewards"][:3 + leftover] and len(again[0]["rewards"]) == 8
    assert again[0]["updates"] == full["updates"] == 2


def test_only_the_newest_checkpoint_keep_files_are_kept(tmp_path):
    straight(compose_cfg(BASE + EXACT["pong_v5"] + ["episodes=7", "checkpoint_every=1", "checkpoint_keep=2"]), tmp_path)
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["ckpt-e00000006-s000000001500.npz", "ckpt-e00000007-s000000001750.npz"]


def test_resume_with_a_shape_changing_override_is_refused_naming_the_key(tmp_path):
    straight(compose_cfg(VECTOR + ["episodes=2"]), tmp_path / "a")
    folder = tmp_path / "a" / "checkpoints"
    r = run_cli([f"resume={folder}", "H=16", "episodes=4", "tracking=none"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "error: resume: H=16 but" in r.stderr and "H=8" in r.stderr and "Traceback" not in r.stderr
    r = run_cli([f"resume={folder}", "crop.bottom=185", "tracking=none"], cwd=tmp_path)
    assert r.returncode == 2 and "crop=" in r.stderr and "Traceback" not in r.stderr


def test_resume_without_overrides_takes_the_checkpoints_config_and_continues(tmp_path):
    straight(compose_cfg(BASE + ["episodes=2", "env=pong_v0"]), tmp_path / "a")
    r = run_cli([f"resume={tmp_path / 'a'}", "episodes=3", "tracking=none"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr and "at episode 2" in r.stderr and "3 episodes" in r.stderr


def stopped_run(tmp_path, *overrides):
    """The output folder of a 2-episode run (2 envs, 60-step episodes) made with `python -m pgpong.run`."""
    r = run_cli([*overrides, "H=8", "env.num_envs=2", "env.max_episode_steps=60", "tracking=none", "episodes=2"],
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (out,) = (tmp_path / "outputs").glob("*/*")
    return out


@pytest.mark.parametrize("variant, group, kind, key, value", [
    (["experiment=fast"], "optim", "adam", "optim.beta1", 0.9),          # the README's headline config
    (["baseline=value", "baseline.lr=0.02"], "baseline", "value", "baseline.lr", 0.02),
])
def test_a_run_on_another_option_of_a_group_resumes_on_that_option(tmp_path, variant, group, kind, key, value):
    """The checkpoint's option (optim=adam, baseline=value) has keys the default option lacks:
    resuming without naming the group again keeps the checkpoint's option, all its keys."""
    out = stopped_run(tmp_path, *variant)
    r = run_cli([f"resume={out}", "episodes=3", "tracking=none"], cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "resumed from" in r.stderr and "3 episodes" in r.stderr
    resumed = max((tmp_path / "outputs").glob("*/*"))
    saved = OmegaConf.load(resumed / "config.yaml")
    assert saved[group][config.OPTION_KEY[group]] == kind and OmegaConf.select(saved, key) == value


def test_an_override_inside_a_resumed_runs_own_option_goes_on_top_of_it(tmp_path):
    out = stopped_run(tmp_path, "experiment=fast")
    r = run_cli([f"resume={out}", "episodes=3", "tracking=none", "optim.eps=1e-6"], cwd=tmp_path)   # a key both options have
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    saved = OmegaConf.load(max((tmp_path / "outputs").glob("*/*")) / "config.yaml")
    assert (saved.optim.name, saved.optim.beta1, saved.optim.eps, saved.lr) == ("adam", 0.9, 1e-6, 5.24e-4)


def test_a_checkpoint_from_before_env_emulator_nice_resumes_with_its_default():
    """Checkpoints written before a speed-only key existed lack it: their env node still matches."""
    saved = OmegaConf.to_container(compose_cfg(["experiment=fast", "tracking=none"]))
    del saved["env"]["emulator_nice"]
    merged = resume_config(compose_cfg(["tracking=none"]), [], saved, "old.npz")
    assert (merged.env.emulator_nice, merged.optim.name, merged.lr) == (5, "adam", 5.24e-4)


@pytest.mark.parametrize("key,value", [("emulator_nice", 0), ("num_threads", 1)])
def test_resume_may_change_a_speed_only_env_key_but_not_the_rest_of_env(tmp_path, key, value):
    out = stopped_run(tmp_path)
    r = run_cli([f"resume={out}", "env.groups=1", "tracking=none"], cwd=tmp_path)
    assert r.returncode == 2 and "error: resume: env=" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli([f"resume={out}", "episodes=3", f"env.{key}={value}", "tracking=none"], cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert OmegaConf.load(max((tmp_path / "outputs").glob("*/*")) / "config.yaml").env[key] == value


def test_resume_from_a_missing_target_is_a_clear_error(tmp_path):
    r = run_cli(["resume=nothing-here.npz", "tracking=none"], cwd=tmp_path)
    assert r.returncode == 2 and "nothing-here.npz: no such model/checkpoint file" in r.stderr
    with pytest.raises(PgpongError, match="no checkpoint files"):
        checkpoint.latest(tmp_path)


@pytest.mark.parametrize("env", ["pong_v0", "pong_v5"])
def test_a_restored_emulator_plays_on_exactly_like_the_original_sticky_actions_included(env):
    # ALE's saved state leaves out the action that sticky actions repeat; snapshot/restore put it back
    cfg = compose_cfg(EXACT[env] + ["env.max_episode_steps=100"])
    failures = []
    for trial in range(12):
        k = 95 + trial                               # before, at and after an episode boundary
        acts = np.random.default_rng(trial).choice([2, 3] if trial % 2 else [0, 2, 3], size=k + 60)
        a, b = make_envs(cfg.env, [7]), make_envs(cfg.env, [7])
        a.reset()
        for act in acts[:k]:
            a.step([act])
        arrays, meta = a.snapshot()
        b.restore(arrays, meta)
        for t, act in enumerate(acts[k:]):
            fa, ra, da = a.step([act])
            fb, rb, db = b.step([act])
            if not (np.array_equal(fa[0], fb[0]) and ra[0] == rb[0] and da[0] == db[0]):
                failures.append((k, t))
                break
        a.close(), b.close()
    assert failures == []
