"""The training state and its checkpoint: everything needed to continue as if never stopped.

TrainState holds the numbers of training (weights, optimizer memory, the batch gradient,
counters, every episode's reward); Live holds its rollout side (per env group, the episodes in
flight and the actions sent). A checkpoint file (`checkpoints/ckpt-e<episode>-s<steps>.npz`,
written with pgpong/engine/checkpoint.py) holds both plus the random generator and, where the
emulators can be saved, their states; `restore_state` checks every array against the config.
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from pgpong.core import optim, policy
from pgpong.core.preprocess import crop_window, frame_size, input_size
from pgpong.engine import checkpoint
from pgpong.engine.envs import draw_env_seeds
from pgpong.engine.rollout import Episode, Rollout
from pgpong.errors import PgpongError


@dataclass
class TrainState:
    """Everything that changes during training."""
    params: dict
    opt_state: dict
    grad_buffer: dict
    episode: int = 0          # finished episodes
    steps: int = 0            # agent steps taken (all envs)
    updates: int = 0          # optimizer steps taken
    running: float | None = None
    batch_episodes: int = 0   # episodes in grad_buffer
    batch_steps: int = 0
    batch_p_up: float = 0.0   # sum of P(UP) over the batch's steps
    batch_value_loss: float = 0.0
    batch_stale_steps: int = 0   # steps in the batch acted with parameters older than the current ones
    rewards: list = field(default_factory=list)   # every episode's reward, in order


def new_state(cfg, rng: np.random.Generator) -> TrainState:
    """Fresh weights drawn from rng, zeroed optimizer memory and batch gradient."""
    D = input_size(cfg.crop, cfg.input.kind)
    params = policy.init_params(rng, D, cfg.H, cfg.actions.kind, cfg.baseline.kind == "value", np.dtype(cfg.dtype))
    return TrainState(params=params, opt_state=optim.init_state(cfg.optim.name, params),
                      grad_buffer={k: np.zeros_like(v) for k, v in params.items()})


def save_model(path, cfg, state: TrainState) -> Path:
    """The policy's weights plus the config they were trained with, as .npz."""
    meta = {"kind": "model", "episode": state.episode, "config": OmegaConf.to_container(cfg, resolve=True)}
    return checkpoint.save(path, state.params, meta)


CKPT_VERSION = 2
SHAPE_KEYS = ("H", "dtype", "crop", "input.kind", "actions.kind", "baseline.kind", "optim.name", "env", "seed")
EPISODE_FIELDS = ("hs", "dlogps", "p_up", "rewards", "version")


@dataclass
class Live:
    """The rollout side of training, as a checkpoint sees it between two steps.

    rollouts: per env group, its Rollout (frames and episodes in flight); sent: per group, the
    env actions already chosen and sent for the next step (None: not chosen yet); leftover:
    episodes that finished in the step that reached the target count, not learned from (a
    longer run resumed from the end checkpoint learns them first, as an uninterrupted run would).
    """
    rollouts: list
    sent: list
    leftover: list = field(default_factory=list)


def rollout_settings(cfg) -> dict:
    """What a Rollout needs of the config, as plain values: the crop window, input and action kinds, H."""
    return {"window": crop_window(cfg.crop), "input_kind": cfg.input.kind, "actions": cfg.actions.kind, "H": cfg.H}


def start_rollouts(cfg, envs) -> Live:
    """Fresh rollouts: every group's emulators reset, nothing chosen yet."""
    settings = rollout_settings(cfg)
    return Live([Rollout(g.reset(), dtype=np.dtype(cfg.dtype), **settings) for g in envs.groups],
                [None] * len(envs.groups))


def _pack_episode(arrays: dict, prefix: str, ep: Episode) -> None:
    arrays[prefix + "idx"], arrays[prefix + "idx_off"] = checkpoint.pack_ragged(list(ep.idx), np.int32)
    arrays[prefix + "val"], _ = checkpoint.pack_ragged(list(ep.val), np.int8)
    for k in EPISODE_FIELDS:
        arrays[prefix + k] = np.asarray(getattr(ep, k))


def _unpack_episode(arrays: dict, prefix: str, params: dict, path) -> Episode:
    """One saved episode, every array's shape and dtype checked against the config."""
    D, H = params["W1"].shape
    dtype, three = params["W1"].dtype, params["W2"].ndim == 2
    if prefix + "rewards" not in arrays or arrays[prefix + "rewards"].ndim != 1:
        raise PgpongError(f"{path}: no episode {prefix.rstrip('.')}")
    T = arrays[prefix + "rewards"].shape[0]
    checkpoint.expect(arrays, {prefix + "idx_off": ((T + 1,), np.int64), prefix + "hs": ((T, H), dtype),
                               prefix + "dlogps": (((T, 3) if three else (T,)), dtype),
                               prefix + "p_up": ((T,), dtype), prefix + "rewards": ((T,), np.float64),
                               prefix + "version": ((T,), np.int64)}, path)
    idx_flat, val_flat = arrays[prefix + "idx"], arrays[prefix + "val"]
    checkpoint.expect(arrays, {prefix + "idx": (idx_flat.shape, np.int32), prefix + "val": (idx_flat.shape, np.int8)},
                      path)
    if idx_flat.ndim != 1 or (idx_flat.size and (idx_flat.min() < 0 or idx_flat.max() >= D)):
        raise PgpongError(f"{path}: {prefix}idx holds input indices outside 0..{D - 1}")
    return Episode(idx=checkpoint.unpack_ragged(idx_flat, arrays[prefix + "idx_off"], path, prefix + "idx"),
                   val=checkpoint.unpack_ragged(val_flat, arrays[prefix + "idx_off"], path, prefix + "val"),
                   **{k: _fresh(arrays[prefix + k]) for k in EPISODE_FIELDS})


def checkpoint_state(cfg, state: TrainState, rng: np.random.Generator, envs, live: Live) -> tuple[dict, dict]:
    """(arrays, meta) holding weights, optimizer, batch gradient, counters, RNGs, emulators, rollouts.

    The episodes in flight, their frames and the actions sent for the next step are saved only
    with emulators that can be saved (`envs.snapshot()`, the gymnasium path): AtariVectorEnv's
    cannot, so there a resumed run starts new episodes on every env.
    """
    arrays = {f"param.{k}": v for k, v in state.params.items()}
    arrays.update({f"opt.{k}": v for k, v in state.opt_state.items()})
    arrays.update({f"grad.{k}": v for k, v in state.grad_buffer.items()})
    arrays["rewards"] = np.asarray(state.rewards, np.float64)                    # (episodes,)
    for j, ep in enumerate(live.leftover):
        _pack_episode(arrays, f"left{j}.", ep)
    env_meta = None
    if hasattr(envs, "snapshot"):
        env_arrays, env_meta = envs.snapshot()
        arrays.update(env_arrays)
        first = 0
        for k, (ro, sent) in enumerate(zip(live.rollouts, live.sent)):
            arrays[f"group{k}.cur"], arrays[f"group{k}.prev"] = ro.cur, ro.prev        # (n, F) uint8
            arrays[f"group{k}.has_prev"] = ro.has_prev                                # (n,) bool
            if sent is not None:
                arrays[f"group{k}.actions"] = np.asarray(sent, np.int64)              # (n,)
            for i, ep in enumerate(ro.in_flight()):
                _pack_episode(arrays, f"env{first + i}.", ep)
            first += ro.n
    meta = {"kind": "checkpoint", "version": CKPT_VERSION, "config": OmegaConf.to_container(cfg, resolve=True),
            "episode": state.episode, "steps": state.steps, "updates": state.updates, "running": state.running,
            "batch_episodes": state.batch_episodes, "batch_steps": state.batch_steps,
            "batch_p_up": state.batch_p_up, "batch_value_loss": state.batch_value_loss,
            "batch_stale_steps": state.batch_stale_steps, "leftover": len(live.leftover),
            "rng": rng.bit_generator.state, "num_envs": sum(ro.n for ro in live.rollouts),
            "groups": [ro.n for ro in live.rollouts], "envs": env_meta}
    return arrays, meta


def write_checkpoint(cfg, state: TrainState, rng, envs, live: Live, folder, extra_meta: dict | None = None) -> Path:
    """One atomic checkpoint file in `folder`; only the newest cfg.checkpoint_keep are kept."""
    arrays, meta = checkpoint_state(cfg, state, rng, envs, live)
    meta.update(extra_meta or {})
    path = checkpoint.save(checkpoint.checkpoint_path(folder, state.episode, state.steps), arrays, meta)
    checkpoint.prune(folder, cfg.checkpoint_keep)
    return path


def restore_state(cfg, arrays: dict, meta: dict, rng: np.random.Generator, envs, path) -> tuple[TrainState, Live]:
    """The TrainState and the rollouts saved in a checkpoint; rng and envs are put back where they were.

    Every array is checked against the shapes this config needs, so a file from another
    config (or a crafted one) gives an error naming what differs instead of a silent broadcast.
    Emulators without `restore` (the vector path) are reseeded from (seed, steps) and start new
    episodes: the episodes that were in flight are not continued.
    """
    if meta.get("kind") != "checkpoint":
        raise PgpongError(f"{path}: a {meta.get('kind', 'unknown')!r} file, not a training checkpoint "
                          f"(resume needs checkpoints/ckpt-*.npz)")
    if meta.get("version") != CKPT_VERSION:
        raise PgpongError(f"{path}: checkpoint format version {meta.get('version')}, this pgpong reads {CKPT_VERSION}")
    ref = new_state(cfg, np.random.default_rng(0))
    expected = {f"param.{k}": (v.shape, v.dtype) for k, v in ref.params.items()}
    expected.update({f"opt.{k}": (v.shape, v.dtype) for k, v in ref.opt_state.items()})
    expected.update({f"grad.{k}": (v.shape, v.dtype) for k, v in ref.grad_buffer.items()})
    checkpoint.expect(arrays, expected, path)
    checkpoint.require_finite(arrays, path, [k for k in expected if not k.startswith("opt.t")])
    try:
        state = TrainState(
            params={k: _fresh(arrays[f"param.{k}"]) for k in ref.params},
            opt_state={k: _fresh(arrays[f"opt.{k}"]) for k in ref.opt_state},
            grad_buffer={k: _fresh(arrays[f"grad.{k}"]) for k in ref.grad_buffer},
            episode=int(meta["episode"]), steps=int(meta["steps"]), updates=int(meta["updates"]),
            running=None if meta["running"] is None else float(meta["running"]),
            batch_episodes=int(meta["batch_episodes"]), batch_steps=int(meta["batch_steps"]),
            batch_p_up=float(meta["batch_p_up"]), batch_value_loss=float(meta["batch_value_loss"]),
            batch_stale_steps=int(meta["batch_stale_steps"]),
            rewards=[float(r) for r in arrays["rewards"]])
        rng_state = meta["rng"]
        n, sizes, n_left = int(meta["num_envs"]), [int(x) for x in meta["groups"]], int(meta["leftover"])
    except (KeyError, TypeError, ValueError) as e:
        raise PgpongError(f"{path}: checkpoint metadata is incomplete ({type(e).__name__}: {e})") from None
    if arrays["rewards"].shape != (state.episode,):
        raise PgpongError(f"{path}: rewards has shape {arrays['rewards'].shape} for {state.episode} episodes")
    if n != envs.num_envs:
        raise PgpongError(f"{path}: saved with env.num_envs={n}, this run has {envs.num_envs}")
    leftover = [_unpack_episode(arrays, f"left{j}.", ref.params, path) for j in range(n_left)]
    try:
        rng.bit_generator.state = rng_state
    except (TypeError, ValueError, KeyError) as e:
        raise PgpongError(f"{path}: random generator state unusable ({e})") from None
    if meta.get("envs") is not None and hasattr(envs, "restore"):
        if sizes != [g.num_envs for g in envs.groups]:
            raise PgpongError(f"{path}: saved with env groups of {sizes} envs, this run has "
                              f"{[g.num_envs for g in envs.groups]}")
        live = _restore_rollouts(cfg, arrays, ref.params, sizes, path)
        envs.restore(arrays, meta["envs"])
    else:   # no emulator state (AtariVectorEnv): new episodes on fresh seeds, derived from (seed, steps)
        if hasattr(envs, "reseed"):
            envs.reseed(draw_env_seeds(np.random.default_rng([cfg.seed, state.steps]), n))
        live = start_rollouts(cfg, envs)
    live.leftover = leftover
    return state, live


def _fresh(a: np.ndarray) -> np.ndarray:
    """A writeable copy in newly allocated memory, like the arrays training makes.

    Arrays read from a zip member sit at arbitrary addresses, and BLAS kernels round
    differently on differently aligned data: without this copy a resumed run drifts from the
    uninterrupted one in the last bits.
    """
    out = np.empty_like(a)
    out[...] = a
    return out


def _restore_rollouts(cfg, arrays: dict, params: dict, sizes: list, path) -> Live:
    """Per group: its Rollout (frames, episodes in flight) and the actions sent, each array checked."""
    F = frame_size(cfg.crop)
    settings = rollout_settings(cfg)
    rollouts, sent, first = [], [], 0
    for k, n in enumerate(sizes):
        g = f"group{k}."
        checkpoint.expect(arrays, {g + "cur": ((n, F), np.uint8), g + "prev": ((n, F), np.uint8),
                                   g + "has_prev": ((n,), np.bool_)}, path)
        episodes = [_unpack_episode(arrays, f"env{first + i}.", params, path) for i in range(n)]
        rollouts.append(Rollout.resume(arrays[g + "cur"], arrays[g + "prev"], arrays[g + "has_prev"], episodes,
                                       dtype=params["W1"].dtype, **settings))
        if g + "actions" in arrays:
            checkpoint.expect(arrays, {g + "actions": ((n,), np.int64)}, path)
            sent.append(_fresh(arrays[g + "actions"]))
        else:
            sent.append(None)
        first += n
    return Live(rollouts, sent)
