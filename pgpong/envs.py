"""Environment construction: the emulators behind one interface, stepped as a batch.

`reset()` returns one RGB frame per env; `step(actions)` returns frames, rewards and done
flags, and a done env is reset at once, so its returned frame starts its next episode (the
gist's `env.reset()` after `done`).
"""
import gymnasium as gym
import ale_py
import numpy as np

from pgpong.errors import PgpongError

gym.register_envs(ale_py)


def make_kwargs(env_cfg) -> dict:
    """gymnasium.make keyword arguments for the settings the user overrode."""
    kwargs = {}
    if env_cfg.frameskip is not None:
        kwargs["frameskip"] = env_cfg.frameskip
    if env_cfg.repeat_action_probability is not None:
        kwargs["repeat_action_probability"] = env_cfg.repeat_action_probability
    if env_cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = env_cfg.max_episode_steps
    return kwargs


def make_one(env_cfg, render_mode: str | None = None) -> gym.Env:
    """One gymnasium env, or a PgpongError naming env.id when it cannot be made."""
    try:
        return gym.make(env_cfg.id, render_mode=render_mode, **make_kwargs(env_cfg))
    except gym.error.Error as e:
        raise PgpongError(f"env.id={env_cfg.id}: cannot make it ({e}); try ALE/Pong-v5 or Pong-v0") from None


class GymEnvs:
    """`num_envs` gymnasium envs stepped one after another in this thread."""

    def __init__(self, env_cfg, seeds: list[int]):
        self.envs = [make_one(env_cfg) for _ in seeds]
        self.seeds = [int(s) for s in seeds]
        self.num_envs = len(seeds)

    def reset(self) -> list[np.ndarray]:
        return [env.reset(seed=seed)[0] for env, seed in zip(self.envs, self.seeds)]

    def step(self, actions) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        frames, rewards, dones = [], np.zeros(self.num_envs), np.zeros(self.num_envs, bool)
        for i, (env, a) in enumerate(zip(self.envs, actions)):
            frame, rewards[i], terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                dones[i] = True
                frame, _ = env.reset()
            frames.append(frame)
        return frames, rewards, dones

    def describe(self) -> dict:
        """The settings that define the environment, for the run's params."""
        spec = self.envs[0].spec
        kwargs = dict(spec.kwargs)
        frameskip = kwargs.get("frameskip")
        if isinstance(frameskip, (tuple, list)):
            frameskip = f"random {frameskip[0]}..{frameskip[1] - 1}"
        return {
            "env.resolved.id": spec.id,
            "env.resolved.frameskip": frameskip,
            "env.resolved.repeat_action_probability": kwargs.get("repeat_action_probability"),
            "env.resolved.max_num_frames_per_episode": kwargs.get("max_num_frames_per_episode"),
            "env.resolved.max_episode_steps": spec.max_episode_steps,
            "env.resolved.num_envs": self.num_envs,
            "env.resolved.ale_py": ale_py.__version__,
            "env.resolved.gymnasium": gym.__version__,
        }

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_envs(env_cfg, seeds: list[int]) -> GymEnvs:
    """The environment adapter the config asks for."""
    return GymEnvs(env_cfg, seeds)
