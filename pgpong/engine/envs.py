"""Environment construction: the emulators behind one interface, stepped as a batch.

`reset()` returns one frame per env; `step(actions)` returns frames, rewards and done flags,
and a done env is reset at once, so its returned frame starts its next episode (the gist's
`env.reset()` after `done`). `step` is `send(actions)` then `recv()`: between the two the caller
may work while the emulators run on their own threads (VectorEnvs); `cancel()` drops a step
sent but not collected (the trainer's exit paths), so a saved emulator is never stepped past it.

- GymEnvs: gymnasium envs stepped one after another (the gist-exact path, `env=pong_v0`), RGB frames.
- VectorEnvs: ale-py's C++ AtariVectorEnv, `num_envs` emulators in `groups` vector envs of
  `num_threads` threads each (0: the cores shared among the groups, `emulator_threads`), in
  synchronous mode (every env steps every call, so runs are deterministic for a seed), grayscale frames (binarized identically: see pgpong/core/preprocess.py),
  settings that make each env's episodes those of the gymnasium id (no reward clipping,
  noop/fire resets, episodic life or max-pooling).
"""
import os
import sys
import threading

import ale_py
import gymnasium as gym
import numpy as np
from ale_py.vector_env import AtariVectorEnv

from pgpong.errors import PgpongError

gym.register_envs(ale_py)
ALE_ENTRY_POINT = "ale_py.env:AtariEnv"   # what ale-py's entries in gymnasium's registry make


def check_ale_id(env_id) -> None:
    """Refuse an env id that is not an ALE game registered by ale-py.

    A registry look-up only: gymnasium imports the module named before `:` in an id
    (`evil_mod:Foo-v0` runs ./evil_mod.py), so an id from a file or a command line is checked
    before gymnasium ever sees it.
    """
    spec = gym.registry.get(env_id) if isinstance(env_id, str) else None
    if spec is None or spec.entry_point != ALE_ENTRY_POINT:
        raise PgpongError(f"env.id={env_id}: not an ALE game; use an id registered by ale-py "
                          f"(e.g. ALE/Pong-v5, Pong-v0, PongNoFrameskip-v4)")


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
    check_ale_id(env_cfg.id)
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
        self.groups = [self]
        self._actions = None                      # sent, stepped by recv()

    def reset(self) -> list[np.ndarray]:
        return [env.reset(seed=seed)[0] for env, seed in zip(self.envs, self.seeds)]

    def send(self, actions) -> None:
        self._actions = actions

    def recv(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        actions, self._actions = self._actions, None
        return self.step(actions)

    def cancel(self) -> None:
        """Forget actions sent but not stepped (the emulators stay where they are)."""
        self._actions = None

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
            except (RuntimeError, SystemError, ValueError, TypeError, KeyError) as e:   # SystemError: bad bytes
                raise PgpongError(f"env{i}.ale: the emulator state cannot be restored ({e})") from None
            limit = _time_limit(env)
            if limit is not None:
                limit._elapsed_steps = m["elapsed_steps"]

    def close(self) -> None:
        for env in self.envs:
            env.close()


def check_ale_state(data: np.ndarray, name: str) -> None:
    """`data` parses as a saved emulator state (ale-py's own parser), before any emulator is made."""
    try:
        ale_py.ALEState(data.tobytes())
    except (RuntimeError, SystemError, ValueError, TypeError) as e:   # SystemError: ale-py's for bad bytes
        raise PgpongError(f"{name}: not a saved emulator state ({e})") from None


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


def vector_settings(env_cfg) -> dict:
    """AtariVectorEnv arguments that reproduce the gymnasium id's episodes, or a PgpongError."""
    check_ale_id(env_cfg.id)
    try:
        spec = gym.spec(env_cfg.id)
    except gym.error.Error as e:
        raise PgpongError(f"env.id={env_cfg.id}: cannot make it ({e}); try ALE/Pong-v5 or Pong-v0") from None
    kwargs = dict(spec.kwargs)
    frameskip = env_cfg.frameskip if env_cfg.frameskip is not None else kwargs.get("frameskip", 4)
    if not isinstance(frameskip, int):
        raise PgpongError(f"env.vector=true, env.id={env_cfg.id}: the vector path needs a fixed frameskip "
                          f"(this id's is random); use env=pong_v0 (env.vector=false) or set env.frameskip")
    if kwargs.get("obs_type", "rgb") not in ("rgb", "grayscale") or kwargs.get("full_action_space", False):
        raise PgpongError(f"env.id={env_cfg.id}: the vector path supports the ALE ids with minimal action set")
    sticky = env_cfg.repeat_action_probability
    sticky = kwargs.get("repeat_action_probability", 0.25) if sticky is None else sticky
    max_frames = kwargs.get("max_num_frames_per_episode") or 108_000
    if env_cfg.max_episode_steps is not None:           # gymnasium's TimeLimit in agent steps, as frames
        max_frames = min(max_frames, env_cfg.max_episode_steps * frameskip)
    elif spec.max_episode_steps is not None:
        max_frames = min(max_frames, spec.max_episode_steps * frameskip)
    return dict(game=kwargs["game"], frameskip=frameskip, repeat_action_probability=float(sticky),
                max_num_frames_per_episode=int(max_frames), mode=kwargs.get("mode"),
                difficulty=kwargs.get("difficulty"))


def episode_cap(env_cfg) -> int:
    """The most agent steps one episode can last: env.max_episode_steps, or the id's emulator frame
    limit (ALE: 108,000) over its frameskip (the smallest of a random one; 2 for an id not registered).

    Read from gymnasium's registry only: looking an id up never imports a module.
    """
    spec = gym.envs.registration.registry.get(env_cfg.id)
    kwargs = dict(spec.kwargs) if spec is not None else {}
    frameskip = env_cfg.frameskip if env_cfg.frameskip is not None else kwargs.get("frameskip", (2, 5))
    frameskip = min(frameskip) if isinstance(frameskip, (tuple, list)) else frameskip
    cap = -(-(kwargs.get("max_num_frames_per_episode") or 108_000) // max(1, frameskip))
    if spec is not None and spec.max_episode_steps is not None:
        cap = min(cap, spec.max_episode_steps)
    if env_cfg.max_episode_steps is not None:
        cap = min(cap, env_cfg.max_episode_steps)
    return cap


class VectorGroup:
    """One AtariVectorEnv: `len(seeds)` emulators stepped together on `num_threads` threads."""

    def __init__(self, settings: dict, seeds, num_threads: int, nice: int = 0):
        self.seeds = np.asarray(seeds, np.int64)
        self.num_envs = len(self.seeds)
        self.env = made_nicer(lambda: make_vector(settings, self.num_envs, num_threads), nice)
        self._ale = self.env.ale                                  # its C++ batch: send/recv without the wrapper's checks
        self._strength = np.ones(self.num_envs, np.float32)       # paddle strength: full, as the wrapper sends
        self._pending = False
        self._resetting: _Reset | None = None

    def start_reset(self) -> None:
        """Begin the seeded reset on a helper thread: ale-py resets on the emulator threads without
        the GIL, so it overlaps what this thread does next (making the next group). `reset` collects it."""
        self._resetting = _Reset(self.env, self.seeds.copy())

    def _collect_reset(self):
        """The frames of a reset begun by `start_reset` for the current seeds, or None."""
        early, self._resetting = self._resetting, None
        if early is None:
            return None
        early.join()
        return early.frames if early.frames is not None and np.array_equal(early.seeds, self.seeds) else None

    def reset(self) -> np.ndarray:
        frames = self._collect_reset()
        if frames is None:
            obs, _ = self.env.reset(seed=self.seeds)
            frames = obs[:, 0]
        return frames                                             # (n, 210, 160) grayscale

    def send(self, actions) -> None:
        self._ale.send(np.asarray(actions, np.int64), self._strength)
        self._pending = True

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs, rewards, terminated, truncated, _ = self._ale.recv()
        self._pending = False
        return obs[:, 0], rewards.astype(np.float64), terminated | truncated

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.send(actions)
        return self.recv()

    def cancel(self) -> None:
        """Wait for a step sent but not collected, and drop its results."""
        if self._pending:
            self._ale.recv()
            self._pending = False

    def close(self) -> None:
        self._collect_reset()                                     # never close emulators being reset
        self.cancel()                                             # an exception between send and recv
        self.env.close()


class _Reset(threading.Thread):
    """`env.reset(seed=seeds)` on its own thread; its frames, or None if it failed (`reset` then
    resets again on the caller's thread, where a failure is raised as usual)."""

    def __init__(self, env, seeds):
        super().__init__(name="pgpong-reset")
        self.env, self.seeds, self.frames = env, seeds, None
        self.start()

    def run(self) -> None:
        try:
            obs, _ = self.env.reset(seed=self.seeds)
            self.frames = obs[:, 0]
        except Exception:
            pass


class VectorEnvs:
    """`num_envs` emulators in `groups` AtariVectorEnvs of `num_threads` threads each.

    With two groups the trainer acts for one group while the other's emulators run, so the
    act phase (which needs the frames just received) also overlaps emulation. By default
    (`env.num_threads=0`) the groups share the cores, a thread per core: on 2 cores, one
    group's thread runs while the training thread works on the other group's step.
    As one batch (reset/send/recv/step) the groups' envs are concatenated in order.
    """

    def __init__(self, env_cfg, seeds: list[int]):
        self.settings = vector_settings(env_cfg)
        if self.settings["mode"] is not None or self.settings["difficulty"] is not None:
            raise PgpongError(f"env.id={env_cfg.id}: game modes/difficulties are not supported by the vector path")
        self.num_envs = len(seeds)
        self.env_id = env_cfg.id
        g = env_cfg.groups
        if self.num_envs % g:
            raise PgpongError(f"env.groups={g}: must be a positive divisor of env.num_envs={self.num_envs}")
        per = self.num_envs // g
        self.num_threads = emulator_threads(env_cfg)            # per group; a thread per emulator at most
        self.nice = env_cfg.emulator_nice
        self.groups = []
        try:   # each group's reset begins as soon as it is made, beside the making of the next
            for k in range(g):
                self.groups.append(VectorGroup(self.settings, seeds[k * per:(k + 1) * per], self.num_threads, self.nice))
                self.groups[-1].start_reset()
        except BaseException:
            self.close()
            raise

    def reset(self) -> np.ndarray:
        return np.concatenate([grp.reset() for grp in self.groups])

    def reseed(self, seeds) -> None:
        """Seeds for the next reset (a resumed run's new episodes: emulator states cannot be saved)."""
        seeds = np.asarray(seeds, np.int64)
        if len(seeds) != self.num_envs:
            raise PgpongError(f"env.num_envs={self.num_envs}: got {len(seeds)} seeds")
        for grp, part in zip(self.groups, np.split(seeds, len(self.groups))):
            grp.seeds = part

    def send(self, actions) -> None:
        for grp, a in zip(self.groups, np.split(np.asarray(actions), len(self.groups))):
            grp.send(a)

    def recv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        outs = [grp.recv() for grp in self.groups]
        return tuple(np.concatenate(parts) for parts in zip(*outs))

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.send(actions)
        return self.recv()

    def describe(self) -> dict:
        """The settings that define the environment, for the run's params."""
        s = self.settings
        spec = gym.spec(self.env_id)
        return {
            "env.resolved.id": spec.id,
            "env.resolved.frameskip": s["frameskip"],
            "env.resolved.repeat_action_probability": s["repeat_action_probability"],
            "env.resolved.max_num_frames_per_episode": s["max_num_frames_per_episode"],
            "env.resolved.max_episode_steps": s["max_num_frames_per_episode"] // s["frameskip"],
            "env.resolved.num_envs": self.num_envs,
            "env.resolved.vector": "ale_py.vector_env.AtariVectorEnv (synchronous, autoreset SameStep)",
            "env.resolved.num_threads": self.num_threads,            # per group
            "env.resolved.groups": len(self.groups),
            "env.resolved.emulator_nice": self.nice if sys.platform == "linux" else 0,
            "env.resolved.frames": "grayscale",
            "env.resolved.ale_py": ale_py.__version__,
            "env.resolved.gymnasium": gym.__version__,
        }

    def close(self) -> None:
        for grp in self.groups:
            grp.close()


def made_nicer(make, nice: int):
    """make(), then the threads it started (e.g. a vector env's emulators) made `nice` nicer than
    they began (Linux, where nice is per thread). So when emulators and the training thread that
    feeds them want the same core, the training thread gets it first. nice 0, or another
    platform: make() as it is."""
    if nice <= 0 or sys.platform != "linux":
        return make()
    before = _thread_ids()
    made = make()
    for tid in _thread_ids() - before:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except OSError:           # it ended meanwhile
            pass
    return made


def usable_cores() -> int:
    """CPUs this process may run on (its affinity: a scheduler's job gets its own), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):          # not Linux
        return os.cpu_count() or 1


def emulator_threads(env_cfg) -> int:
    """Emulator threads per vector env: env.num_threads, or for 0 the usable cores shared among
    the groups (one thread per core in all), at least 1; never more than a group's emulators.
    (pgpong.cluster.threads_per_group is the same rule for a job's CPUs: the engine may not
    import it, tests/test_layers.py.)"""
    per = max(1, env_cfg.num_envs // max(1, env_cfg.groups))
    threads = env_cfg.num_threads or max(1, usable_cores() // max(1, env_cfg.groups))
    return min(threads, per)


def _thread_ids() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def make_vector(settings: dict, num_envs: int, num_threads: int, **overrides) -> AtariVectorEnv:
    """The raw AtariVectorEnv for resolved settings (also the benchmark's emulator-only ceiling)."""
    kwargs = dict(
        num_threads=num_threads,
        frameskip=settings["frameskip"],
        repeat_action_probability=settings["repeat_action_probability"],
        max_num_frames_per_episode=settings["max_num_frames_per_episode"],
        img_height=210, img_width=160, grayscale=True, stack_num=1, maxpool=False,   # the raw last frame
        noop_max=0, use_fire_reset=False, episodic_life=False, reward_clipping=False,
        autoreset_mode="SameStep",      # a done env's returned frame is its next episode's first
    )
    kwargs.update(overrides)
    return AtariVectorEnv(settings["game"], num_envs, **kwargs)


def make_envs(env_cfg, seeds: list[int]):
    """The environment adapter the config asks for."""
    if env_cfg.vector:
        return VectorEnvs(env_cfg, seeds)
    return GymEnvs(env_cfg, seeds)


def draw_env_seeds(rng: np.random.Generator, n: int) -> list[int]:
    """n emulator seeds drawn from rng."""
    return rng.integers(0, 2**31 - 1, size=n).tolist()


def seeded_envs(cfg) -> tuple[np.random.Generator, "GymEnvs | VectorEnvs"]:
    """The run's one random generator, and its envs seeded from it (env seeds drawn first)."""
    rng = np.random.default_rng(cfg.seed)
    return rng, make_envs(cfg.env, draw_env_seeds(rng, cfg.env.num_envs))
