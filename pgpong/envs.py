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
        self.last_actions = [0] * self.num_envs   # ALE action sticky actions repeat (0 = NOOP, also after a reset)

    def reset(self) -> list[np.ndarray]:
        return [env.reset(seed=seed)[0] for env, seed in zip(self.envs, self.seeds)]

    def step(self, actions) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        frames, rewards, dones = [], np.zeros(self.num_envs), np.zeros(self.num_envs, bool)
        for i, (env, a) in enumerate(zip(self.envs, actions)):
            frame, rewards[i], terminated, truncated, _ = env.step(a)
            self.last_actions[i] = env.unwrapped._action_set[a].value
            if terminated or truncated:
                dones[i] = True
                frame, _ = env.reset()
                self.last_actions[i] = ale_py.Action.NOOP.value   # ALE's reset_game forgets the last action
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

    def snapshot(self) -> tuple[dict, list]:
        """Each emulator's full state (with its RNG), its frameskip RNG and its TimeLimit count."""
        arrays, meta = {}, []
        for i, env in enumerate(self.envs):
            ale_state = env.unwrapped.clone_state(include_rng=True).serialize()
            arrays[f"env{i}.ale"] = np.frombuffer(ale_state, np.uint8)
            limit = _time_limit(env)
            meta.append({"np_random": env.unwrapped.np_random.bit_generator.state, "last_action": self.last_actions[i],
                         "elapsed_steps": limit._elapsed_steps if limit is not None else None})
        return arrays, meta

    def restore(self, arrays: dict, meta: list) -> None:
        """Put every emulator back where `snapshot` saw it."""
        if len(meta) != self.num_envs:
            raise PgpongError(f"env.num_envs={self.num_envs}: the checkpoint holds {len(meta)} emulator states")
        for i, (env, m) in enumerate(zip(self.envs, meta)):
            env.reset(seed=self.seeds[i])      # gymnasium refuses step() before a reset
            try:
                ale_state = ale_py.ALEState(arrays[f"env{i}.ale"].tobytes())
                _prime_sticky_action(env.unwrapped, ale_state, int(m["last_action"]))
                env.unwrapped.restore_state(ale_state)
                env.unwrapped.np_random.bit_generator.state = m["np_random"]
                self.last_actions[i] = int(m["last_action"])
            except (RuntimeError, ValueError, TypeError, KeyError) as e:
                raise PgpongError(f"checkpoint: emulator state {i} cannot be restored ({e})") from None
            limit = _time_limit(env)
            if limit is not None:
                limit._elapsed_steps = m["elapsed_steps"]

    def close(self) -> None:
        for env in self.envs:
            env.close()


def _prime_sticky_action(atari_env, ale_state, ale_action: int) -> None:
    """Make the emulator remember `action` as its previous one (sticky actions repeat it).

    ALE's saved state leaves that out. Acting it for a few frames from the saved state sets it
    (each frame keeps the old action with probability 0.25 only); restoring the state afterwards
    (the caller does) rewinds the emulator and its RNG but not the remembered action.
    """
    ale_action = ale_py.Action(ale_action)
    atari_env.restore_state(ale_state)
    for _ in range(16):        # all 16 frames keeping the old action: 0.25**16, about 2e-10
        atari_env.ale.act(ale_action)


def _time_limit(env):
    """The TimeLimit wrapper in env's chain (it counts the episode's steps), or None."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def make_envs(env_cfg, seeds: list[int]) -> GymEnvs:
    """The environment adapter the config asks for."""
    return GymEnvs(env_cfg, seeds)
