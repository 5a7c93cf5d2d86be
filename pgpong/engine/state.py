"""The training state and its checkpoint: everything needed to continue as if never stopped.

TrainState holds the numbers of training (weights, optimizer memory, the batch gradient,
counters, every episode's reward); Live holds its rollout side (per env group, the episodes in
flight and the actions sent). A checkpoint file (`checkpoints/ckpt-e<episode>-s<steps>.npz`,
written with pgpong/engine/checkpoint.py) holds both plus the random generator and, where the
emulators can be saved, their states. A file is data: `check_checkpoint` and `check_model` check
every metadata field and every array against the (validated) config before anything is used.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from pgpong.core import optim, policy
from pgpong.core.preprocess import crop_window, frame_size, input_size
from pgpong.engine import checkpoint
from pgpong.engine.envs import check_ale_state, draw_env_seeds
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
    arrays[prefix + "idx"], arrays[prefix + "idx_off"] = ep.cols.astype(np.int32), ep.indptr.astype(np.int64)
    arrays[prefix + "val"] = ep.vals.astype(np.int8)
    for k in EPISODE_FIELDS:
        arrays[prefix + k] = np.asarray(getattr(ep, k))


def _check_episode(arrays: dict, prefix: str, params: dict, updates: int, path) -> None:
    """One saved episode's arrays: shapes and dtypes from the config, finite, indices and versions in range."""
    D, H = params["W1"].shape
    dtype, three = params["W1"].dtype, params["W2"].ndim == 2
    if prefix + "rewards" not in arrays or arrays[prefix + "rewards"].ndim != 1:
        raise PgpongError(f"{path}: no episode {prefix.rstrip('.')}")
    T = arrays[prefix + "rewards"].shape[0]
    checkpoint.expect(arrays, {prefix + "idx_off": ((T + 1,), np.int64), prefix + "hs": ((T, H), dtype),
                               prefix + "dlogps": (((T, 3) if three else (T,)), dtype),
                               prefix + "p_up": ((T,), dtype), prefix + "rewards": ((T,), np.float64),
                               prefix + "version": ((T,), np.int64)}, path)
    checkpoint.expect(arrays, {prefix + "idx": (arrays.get(prefix + "idx", np.empty(0)).shape, np.int32)}, path)
    idx_flat = arrays[prefix + "idx"]
    checkpoint.expect(arrays, {prefix + "val": (idx_flat.shape, np.int8)}, path)
    if idx_flat.ndim != 1 or (idx_flat.size and (idx_flat.min() < 0 or idx_flat.max() >= D)):
        raise PgpongError(f"{path}: {prefix}idx holds input indices outside 0..{D - 1}")
    version = arrays[prefix + "version"]
    if version.size and (version.min() < 0 or version.max() > updates):
        raise PgpongError(f"{path}: {prefix}version holds parameter versions outside 0..{updates} (updates)")
    checkpoint.require_finite(arrays, path, [prefix + k for k in ("hs", "dlogps", "p_up", "rewards")])
    checkpoint.check_offsets(idx_flat, arrays[prefix + "idx_off"], path, prefix + "idx")


def _unpack_episode(arrays: dict, prefix: str, path) -> Episode:
    """One saved episode (checked by _check_episode)."""
    return Episode(indptr=_fresh(arrays[prefix + "idx_off"]), cols=_fresh(arrays[prefix + "idx"]),
                   vals=_fresh(arrays[prefix + "val"]), **{k: _fresh(arrays[prefix + k]) for k in EPISODE_FIELDS})


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


COUNTS = ("episode", "steps", "updates", "batch_episodes", "batch_steps", "batch_stale_steps", "leftover", "num_envs")
SUMS = ("batch_p_up", "batch_value_loss")
CKPT_META = {"kind", "version", "config", *COUNTS, *SUMS, "running", "rng", "groups", "envs"}
RUN_META = {"mlflow_run_id", "run_name"}     # added by `python -m pgpong.run` (write_checkpoint's extra_meta)
MODEL_META = {"kind", "episode", "config"}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and bool(np.isfinite(v))


def _check_rng_state(value, path, key: str) -> None:
    """A bit generator state that numpy's PCG64 (the run's generator) accepts."""
    try:
        np.random.PCG64().state = value
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise PgpongError(f"{path}: {key}: not a random generator state ({e})") from None


def check_kind(meta: dict, kind: str, path) -> None:
    """The file is a `kind` ("model" or "checkpoint"): said before its contents are checked."""
    if meta.get("kind") != kind:
        raise PgpongError(f"{path}: a {meta.get('kind', 'unknown')!r} file, not a {kind} "
                          f"(resume needs checkpoints/ckpt-*.npz; play needs a model.npz)")


def _check_meta_keys(meta: dict, allowed: set, kind: str, path) -> None:
    check_kind(meta, kind, path)
    for key in meta:
        if key not in allowed:
            raise PgpongError(f"{path}: unexpected metadata key {key!r}")


def _check_names(arrays: dict, expected, path) -> None:
    for name in arrays:
        if name not in expected:
            raise PgpongError(f"{path}: unexpected array {name!r}")


def _check_weights(cfg, arrays: dict, path, prefix: str, what: str) -> TrainState:
    """The weights of cfg's policy in `arrays` (names under `prefix`): shapes, dtypes, finite.
    Returns a fresh state of cfg, the reference for the other arrays.

    W1 is checked before anything of cfg's size is allocated, so a file's H or crop cannot ask for
    more memory than the file itself holds."""
    D, dtype = input_size(cfg.crop, cfg.input.kind), np.dtype(cfg.dtype)
    checkpoint.expect(arrays, {prefix + "W1": ((D, cfg.H), dtype)}, path, what)
    ref = new_state(cfg, np.random.default_rng(0))
    expected = {f"{prefix}{k}": (v.shape, v.dtype) for k, v in ref.params.items()}
    checkpoint.expect(arrays, expected, path, what)
    checkpoint.require_finite(arrays, path, list(expected))
    return ref


def check_model(cfg, arrays: dict, meta: dict, path) -> None:
    """A model file (save_model) for the validated config cfg: its metadata and weights, nothing else."""
    _check_meta_keys(meta, MODEL_META, "model", path)
    if not (_is_int(meta.get("episode")) and meta["episode"] >= 0):
        raise PgpongError(f"{path}: episode={meta.get('episode')!r}: must be an integer >= 0")
    ref = _check_weights(cfg, arrays, path, "", "model")
    _check_names(arrays, ref.params, path)


def check_checkpoint(cfg, arrays: dict, meta: dict, path) -> None:
    """A training checkpoint for the validated config cfg: every metadata field and every array.

    Counters, sums, generator states and env states are typed and in range; weights, optimizer
    memory, batch gradient, rewards and saved episodes have the shapes and dtypes cfg implies and
    are finite; no key or array is left unchecked.
    """
    _check_meta_keys(meta, CKPT_META | RUN_META, "checkpoint", path)
    if meta.get("version") != CKPT_VERSION:
        raise PgpongError(f"{path}: checkpoint format version {meta.get('version')}, this pgpong reads {CKPT_VERSION}")
    for key in COUNTS:
        if not (_is_int(meta.get(key)) and meta[key] >= (1 if key == "num_envs" else 0)):
            raise PgpongError(f"{path}: {key}={meta.get(key)!r}: must be an integer >= {int(key == 'num_envs')}")
    for key in SUMS:
        if not _is_number(meta.get(key)):
            raise PgpongError(f"{path}: {key}={meta.get(key)!r}: must be a finite number")
    if meta.get("running") is not None and not _is_number(meta["running"]):
        raise PgpongError(f"{path}: running={meta['running']!r}: must be a finite number or null")
    _check_rng_state(meta.get("rng"), path, "rng")
    groups, n = meta.get("groups"), meta["num_envs"]
    if not (isinstance(groups, list) and groups and all(_is_int(g) and g >= 1 for g in groups) and sum(groups) == n):
        raise PgpongError(f"{path}: groups={groups!r}: must be positive env counts adding up to num_envs={n}")
    if meta.get("mlflow_run_id") is not None and not re.fullmatch(r"[0-9a-f]{32}", str(meta["mlflow_run_id"])):
        raise PgpongError(f"{path}: mlflow_run_id={meta['mlflow_run_id']!r}: must be an MLflow run id (32 hex digits)")
    if "run_name" in meta and not isinstance(meta["run_name"], str):
        raise PgpongError(f"{path}: run_name={meta['run_name']!r}: must be a string")

    ref = _check_weights(cfg, arrays, path, "param.", "checkpoint")
    expected = {f"opt.{k}": (v.shape, v.dtype) for k, v in ref.opt_state.items()}
    expected.update({f"grad.{k}": (v.shape, v.dtype) for k, v in ref.grad_buffer.items()})
    expected["rewards"] = ((meta["episode"],), np.float64)
    checkpoint.expect(arrays, expected, path)
    checkpoint.require_finite(arrays, path, [k for k in expected if k != "opt.t"])
    names = {f"param.{k}" for k in ref.params} | set(expected)
    if meta["leftover"] > len(arrays):       # each saved episode is several arrays
        raise PgpongError(f"{path}: leftover={meta['leftover']}: more episodes than the file holds arrays")
    prefixes = [f"left{j}." for j in range(meta["leftover"])]
    if meta.get("envs") is not None:
        names |= _check_envs(cfg, arrays, meta, path)
        prefixes += [f"env{i}." for i in range(n)]
    for prefix in prefixes:
        _check_episode(arrays, prefix, ref.params, meta["updates"], path)
        names |= {prefix + k for k in ("idx", "idx_off", "val", *EPISODE_FIELDS)}
    _check_names(arrays, names, path)


def _check_envs(cfg, arrays: dict, meta: dict, path) -> set:
    """The emulator states and per-group frames and actions of a gymnasium-path checkpoint; their names."""
    envs, n, F = meta["envs"], meta["num_envs"], frame_size(cfg.crop)
    if not (isinstance(envs, list) and len(envs) == n):
        raise PgpongError(f"{path}: envs: must be a list of {n} emulator states (num_envs)")
    names = set()
    for i, m in enumerate(envs):
        if not (isinstance(m, dict) and set(m) == {"np_random", "last_action", "elapsed_steps"}):
            raise PgpongError(f"{path}: envs.{i}: must hold exactly np_random, last_action, elapsed_steps")
        _check_rng_state(m["np_random"], path, f"envs.{i}.np_random")
        if not (_is_int(m["last_action"]) and m["last_action"] >= 0):
            raise PgpongError(f"{path}: envs.{i}.last_action={m['last_action']!r}: must be an ALE action "
                              f"(an integer >= 0)")
        if m["elapsed_steps"] is not None and not (_is_int(m["elapsed_steps"]) and m["elapsed_steps"] >= 0):
            raise PgpongError(f"{path}: envs.{i}.elapsed_steps={m['elapsed_steps']!r}: must be an integer >= 0 or null")
        ale = arrays.get(f"env{i}.ale")
        if ale is None or ale.dtype != np.uint8 or ale.ndim != 1:
            raise PgpongError(f"{path}: env{i}.ale: must be the emulator's saved state (uint8 bytes)")
        check_ale_state(ale, f"{path}: env{i}.ale")
        names.add(f"env{i}.ale")
    allowed_actions = policy.ACTIONS[cfg.actions.kind]
    for k, size in enumerate(meta["groups"]):
        g = f"group{k}."
        checkpoint.expect(arrays, {g + "cur": ((size, F), np.uint8), g + "prev": ((size, F), np.uint8),
                                   g + "has_prev": ((size,), np.bool_)}, path)
        names |= {g + "cur", g + "prev", g + "has_prev"}
        if g + "actions" in arrays:
            checkpoint.expect(arrays, {g + "actions": ((size,), np.int64)}, path)
            if not np.isin(arrays[g + "actions"], allowed_actions).all():
                raise PgpongError(f"{path}: {g}actions holds actions outside {allowed_actions} "
                                  f"(actions.kind={cfg.actions.kind})")
            names.add(g + "actions")
    return names


def restore_state(cfg, arrays: dict, meta: dict, rng: np.random.Generator, envs, path) -> tuple[TrainState, Live]:
    """The TrainState and the rollouts saved in a checkpoint; rng and envs are put back where they were.

    Everything in the file is checked against this config first (check_checkpoint), so a file
    from another config (or a crafted one) gives an error naming what differs instead of a
    silent broadcast. Emulators without `restore` (the vector path) are reseeded from
    (seed, steps) and start new episodes: the episodes that were in flight are not continued.
    """
    check_checkpoint(cfg, arrays, meta, path)
    ref = new_state(cfg, np.random.default_rng(0))
    state = TrainState(
        params={k: _fresh(arrays[f"param.{k}"]) for k in ref.params},
        opt_state={k: _fresh(arrays[f"opt.{k}"]) for k in ref.opt_state},
        grad_buffer={k: _fresh(arrays[f"grad.{k}"]) for k in ref.grad_buffer},
        episode=meta["episode"], steps=meta["steps"], updates=meta["updates"],
        running=None if meta["running"] is None else float(meta["running"]),
        batch_episodes=meta["batch_episodes"], batch_steps=meta["batch_steps"],
        batch_p_up=float(meta["batch_p_up"]), batch_value_loss=float(meta["batch_value_loss"]),
        batch_stale_steps=meta["batch_stale_steps"], rewards=[float(r) for r in arrays["rewards"]])
    n, sizes = meta["num_envs"], meta["groups"]
    if n != envs.num_envs:
        raise PgpongError(f"{path}: saved with env.num_envs={n}, this run has {envs.num_envs}")
    leftover = [_unpack_episode(arrays, f"left{j}.", path) for j in range(meta["leftover"])]
    rng.bit_generator.state = meta["rng"]
    if meta["envs"] is not None and hasattr(envs, "restore"):
        if sizes != [g.num_envs for g in envs.groups]:
            raise PgpongError(f"{path}: saved with env groups of {sizes} envs, this run has "
                              f"{[g.num_envs for g in envs.groups]}")
        live = _restore_rollouts(cfg, arrays, sizes, path)
        try:
            envs.restore(arrays, meta["envs"])
        except PgpongError as e:
            raise PgpongError(f"{path}: {e}") from None
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


def _restore_rollouts(cfg, arrays: dict, sizes: list, path) -> Live:
    """Per group: its Rollout (frames, episodes in flight) and the actions sent (checked by _check_envs)."""
    settings = rollout_settings(cfg)
    rollouts, sent, first = [], [], 0
    for k, n in enumerate(sizes):
        g = f"group{k}."
        episodes = [_unpack_episode(arrays, f"env{first + i}.", path) for i in range(n)]
        rollouts.append(Rollout.resume(arrays[g + "cur"], arrays[g + "prev"], arrays[g + "has_prev"], episodes,
                                       dtype=np.dtype(cfg.dtype), **settings))
        sent.append(_fresh(arrays[g + "actions"]) if g + "actions" in arrays else None)
        first += n
    return Live(rollouts, sent)
