"""The training loop: rollout -> episode gradient -> update every batch_size episodes -> log.

`train` receives its collaborators (envs, tracker, rng, callbacks) and returns a summary; it
never imports MLflow or Optuna. Phases per step: act (forward + sample for every env), step
the emulators, record; per finished episode: gradient, accumulate, log; per batch: update.
"""
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from pgpong import checkpoint, optim, policy
from pgpong.errors import Diverged, Interrupted, PgpongError
from pgpong.gradient import episode_gradient, episode_matrix
from pgpong.preprocess import binarize, input_size, sparse_input
from pgpong.progress import Progress
from pgpong.returns import running_mean


@dataclass
class EpisodeBuffer:
    """What one env's current episode needs for its gradient, kept compact (sparse inputs)."""
    idx: list = field(default_factory=list)       # per step: (k,) int32 non-zero input indices
    val: list = field(default_factory=list)       # per step: (k,) int8 values in {-1, +1}
    hs: list = field(default_factory=list)        # per step: (H,) hidden state at acting time
    dlogps: list = field(default_factory=list)    # per step: scalar or (3,) d log pi / d logit
    p_up: list = field(default_factory=list)      # per step: P(UP)
    rewards: list = field(default_factory=list)   # per step: reward after the action

    def __len__(self) -> int:
        return len(self.rewards)


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
    rewards: list = field(default_factory=list)   # every episode's reward, in order
    rollout: tuple | None = None   # (bufs, cur, prev) of unfinished episodes, when restored from a checkpoint


def new_state(cfg, rng: np.random.Generator) -> TrainState:
    D = input_size(cfg.crop, cfg.input.kind)
    params = policy.init_params(rng, D, cfg.H, cfg.actions.kind, cfg.baseline.kind == "value", np.dtype(cfg.dtype))
    return TrainState(params=params, opt_state=optim.init_state(cfg.optim.name, params),
                      grad_buffer={k: np.zeros_like(v) for k, v in params.items()})


def save_model(path, cfg, state: TrainState) -> Path:
    """The policy's weights plus the config they were trained with, as .npz."""
    meta = {"kind": "model", "episode": state.episode, "config": OmegaConf.to_container(cfg, resolve=True)}
    return checkpoint.save(path, state.params, meta)


def finish_episode(cfg, state: TrainState, buf: EpisodeBuffer) -> dict:
    """Gradient of one finished episode into the batch buffer; its stats for logging."""
    D = state.params["W1"].shape[0]
    dtype = state.params["W1"].dtype
    X = episode_matrix(buf.idx, buf.val, D, dtype)                  # (T, D) sparse
    Hs = np.vstack(buf.hs)                                           # (T, H)
    dlogps = np.asarray(buf.dlogps, dtype)                           # (T,) or (T, 3)
    rewards = np.asarray(buf.rewards, np.float64)                    # (T,)
    grads, info = episode_gradient(state.params, X, Hs, dlogps, rewards, cfg.gamma, cfg.baseline.kind)
    check_finite(state.episode + 1, {"P(UP)": np.asarray(buf.p_up), **{f"gradient of {k}": g for k, g in grads.items()}})
    for k, g in grads.items():
        state.grad_buffer[k] += g
    reward = float(rewards.sum())
    state.episode += 1
    state.running = running_mean(state.running, reward)
    state.rewards.append(reward)
    state.batch_episodes += 1
    state.batch_steps += len(buf)
    state.batch_p_up += float(np.sum(buf.p_up))
    state.batch_value_loss += info.get("value_loss", 0.0)
    return {"episode/reward": reward, "episode/running_reward": state.running, "episode/length": len(buf)}


def update(cfg, state: TrainState) -> dict:
    """Apply the optimizer to the summed batch gradient; stats of the batch for logging."""
    grad_norm = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in state.grad_buffer.values())))
    params, opt_state = optim.step(cfg, state.params, state.grad_buffer, state.opt_state)
    check_finite(state.episode, {f"weights {k} after update {state.updates + 1}": w for k, w in params.items()})
    state.params, state.opt_state = params, opt_state
    stats = {"train/grad_norm": grad_norm, "train/p_up_mean": state.batch_p_up / max(state.batch_steps, 1),
             "train/update": state.updates + 1}
    if cfg.baseline.kind == "value":
        stats["train/value_loss"] = state.batch_value_loss / max(state.batch_episodes, 1)
    state.updates += 1
    state.grad_buffer = {k: np.zeros_like(v) for k, v in state.params.items()}
    state.batch_episodes = state.batch_steps = 0
    state.batch_p_up = state.batch_value_loss = 0.0
    return stats


def check_finite(episode: int, arrays: dict) -> None:
    """Raise Diverged naming the first array holding NaN or inf."""
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise Diverged(f"diverged at episode {episode}: {name} holds NaN or inf; "
                           f"try a smaller lr (the last good checkpoint is kept)")


# --- checkpoints: everything needed to continue as if never stopped -------------------------

CKPT_VERSION = 1
SHAPE_KEYS = ("H", "dtype", "crop", "input.kind", "actions.kind", "baseline.kind", "optim.name", "env", "seed")


def start_rollout(cfg, envs, state: TrainState):
    """(bufs, cur, prev): the restored unfinished episodes, or fresh ones from envs.reset()."""
    if state.rollout is not None:
        rollout, state.rollout = state.rollout, None
        return rollout
    n = envs.num_envs
    return [EpisodeBuffer() for _ in range(n)], [binarize(f, cfg.crop) for f in envs.reset()], [None] * n


def checkpoint_state(cfg, state: TrainState, rng: np.random.Generator, envs, rollout) -> tuple[dict, dict]:
    """(arrays, meta) holding weights, optimizer, batch gradient, counters, RNGs, emulators, rollouts."""
    arrays = {f"param.{k}": v for k, v in state.params.items()}
    arrays.update({f"opt.{k}": v for k, v in state.opt_state.items()})
    arrays.update({f"grad.{k}": v for k, v in state.grad_buffer.items()})
    arrays["rewards"] = np.asarray(state.rewards, np.float64)                    # (episodes,)
    bufs, cur, prev = rollout
    H, dtype = state.params["W1"].shape[1], state.params["W1"].dtype
    three = state.params["W2"].ndim == 2
    for i, b in enumerate(bufs):
        arrays[f"env{i}.idx"], arrays[f"env{i}.idx_off"] = checkpoint.pack_ragged(b.idx, np.int32)
        arrays[f"env{i}.val"], _ = checkpoint.pack_ragged(b.val, np.int8)
        arrays[f"env{i}.hs"] = np.asarray(b.hs, dtype).reshape(len(b), H)                        # (T, H)
        arrays[f"env{i}.dlogps"] = np.asarray(b.dlogps, dtype).reshape((len(b), 3) if three else (len(b),))
        arrays[f"env{i}.p_up"] = np.asarray(b.p_up, np.float64)                                 # (T,)
        arrays[f"env{i}.rewards"] = np.asarray(b.rewards, np.float64)                           # (T,)
        arrays[f"env{i}.cur"] = cur[i]
        if prev[i] is not None:
            arrays[f"env{i}.prev"] = prev[i]
    env_meta = None
    if hasattr(envs, "snapshot"):
        env_arrays, env_meta = envs.snapshot()
        arrays.update(env_arrays)
    meta = {"kind": "checkpoint", "version": CKPT_VERSION, "config": OmegaConf.to_container(cfg, resolve=True),
            "episode": state.episode, "steps": state.steps, "updates": state.updates, "running": state.running,
            "batch_episodes": state.batch_episodes, "batch_steps": state.batch_steps,
            "batch_p_up": state.batch_p_up, "batch_value_loss": state.batch_value_loss,
            "rng": rng.bit_generator.state, "num_envs": len(bufs), "envs": env_meta}
    return arrays, meta


def write_checkpoint(cfg, state: TrainState, rng, envs, rollout, folder, extra_meta: dict | None = None) -> Path:
    """One atomic checkpoint file in `folder`; only the newest cfg.checkpoint_keep are kept."""
    arrays, meta = checkpoint_state(cfg, state, rng, envs, rollout)
    meta.update(extra_meta or {})
    path = checkpoint.save(checkpoint.checkpoint_path(folder, state.episode, state.steps), arrays, meta)
    checkpoint.prune(folder, cfg.checkpoint_keep)
    return path


def restore_state(cfg, arrays: dict, meta: dict, rng: np.random.Generator, envs, path) -> TrainState:
    """The TrainState saved in a checkpoint; rng and envs are put back where they were.

    Every array is checked against the shapes this config needs, so a file from another
    config (or a crafted one) gives an error naming what differs instead of a silent broadcast.
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
            rewards=[float(r) for r in arrays["rewards"]])
        rng_state = meta["rng"]
        n = int(meta["num_envs"])
    except (KeyError, TypeError, ValueError) as e:
        raise PgpongError(f"{path}: checkpoint metadata is incomplete ({type(e).__name__}: {e})") from None
    if arrays["rewards"].shape != (state.episode,):
        raise PgpongError(f"{path}: rewards has shape {arrays['rewards'].shape} for {state.episode} episodes")
    if n != envs.num_envs:
        raise PgpongError(f"{path}: saved with env.num_envs={n}, this run has {envs.num_envs}")
    state.rollout = _restore_rollout(cfg, arrays, ref.params, n, path)
    try:
        rng.bit_generator.state = rng_state
    except (TypeError, ValueError, KeyError) as e:
        raise PgpongError(f"{path}: random generator state unusable ({e})") from None
    if meta.get("envs") is not None and hasattr(envs, "restore"):
        envs.restore(arrays, meta["envs"])
    else:   # no emulator state (an adapter without snapshots): unfinished episodes start over
        state.rollout = start_rollout(cfg, envs, TrainState(params={}, opt_state={}, grad_buffer={}))
    return state


def _fresh(a: np.ndarray) -> np.ndarray:
    """A writeable copy in newly allocated memory, like the arrays training makes.

    Arrays read from a zip member sit at arbitrary addresses, and BLAS kernels round
    differently on differently aligned data: without this copy a resumed run drifts from the
    uninterrupted one in the last bits.
    """
    out = np.empty_like(a)
    out[...] = a
    return out


def _restore_rollout(cfg, arrays: dict, params: dict, n: int, path):
    """Per-env EpisodeBuffers and current/previous frames, each array checked."""
    D, H = params["W1"].shape
    dtype, three = params["W1"].dtype, params["W2"].ndim == 2
    F = binarize(np.zeros((210, 160, 3), np.uint8), cfg.crop).size
    bufs, cur, prev = [], [], []
    for i in range(n):
        p = f"env{i}."
        if p + "rewards" not in arrays or arrays[p + "rewards"].ndim != 1:
            raise PgpongError(f"{path}: no episode buffer for env {i}")
        T = arrays[p + "rewards"].shape[0]
        checkpoint.expect(arrays, {p + "idx_off": ((T + 1,), np.int64), p + "hs": ((T, H), dtype),
                                   p + "dlogps": (((T, 3) if three else (T,)), dtype),
                                   p + "p_up": ((T,), np.float64), p + "cur": ((F,), np.uint8)}, path)
        idx_flat, val_flat = arrays[p + "idx"], arrays[p + "val"]
        checkpoint.expect(arrays, {p + "idx": (idx_flat.shape, np.int32), p + "val": (idx_flat.shape, np.int8)}, path)
        if idx_flat.ndim != 1 or (idx_flat.size and (idx_flat.min() < 0 or idx_flat.max() >= D)):
            raise PgpongError(f"{path}: {p}idx holds input indices outside 0..{D - 1}")
        b = EpisodeBuffer()
        b.idx = checkpoint.unpack_ragged(idx_flat, arrays[p + "idx_off"], path, p + "idx")
        b.val = checkpoint.unpack_ragged(val_flat, arrays[p + "idx_off"], path, p + "val")
        b.hs = list(_fresh(arrays[p + "hs"]))
        b.dlogps = list(arrays[p + "dlogps"])
        b.p_up = [float(x) for x in arrays[p + "p_up"]]
        b.rewards = [float(x) for x in arrays[p + "rewards"]]
        bufs.append(b)
        cur.append(arrays[p + "cur"])
        if p + "prev" in arrays:
            checkpoint.expect(arrays, {p + "prev": ((F,), np.uint8)}, path)
        prev.append(arrays.get(p + "prev"))
    return bufs, cur, prev


def train(cfg, envs, tracker, rng: np.random.Generator, out_dir, callbacks=(), state: TrainState | None = None,
          progress: Progress | None = None, stop=None, ckpt_meta: dict | None = None) -> dict:
    """Train until cfg.episodes episodes have finished; returns a summary of the run.

    `stop()` is polled once per step; when it returns a reason (e.g. "SIGINT") a checkpoint is
    written and Interrupted raised. NaN/inf raise Diverged before anything bad is saved.
    """
    out_dir = Path(out_dir)
    state = state or new_state(cfg, rng)
    progress = progress or Progress(cfg.episodes, cfg.log_every_s)
    outputs = policy.ACTIONS[cfg.actions.kind]
    n = envs.num_envs
    bufs, cur, prev = start_rollout(cfg, envs, state)
    start, start_steps = time.monotonic(), state.steps
    ckpt_dir, ckpt_due, ckpt_steps = out_dir / "checkpoints", False, state.steps

    while state.episode < cfg.episodes:
        # act: forward pass and sampling for every env
        W1, W2 = state.params["W1"], state.params["W2"]
        actions = []
        for i in range(n):
            idx, val = sparse_input(cur[i], prev[i], cfg.input.kind)
            h = policy.hidden(W1, idx, val)                        # (H,)
            p = policy.probs(W2, h)                                # () or (3,)
            a = policy.sample(rng, p)
            b = bufs[i]
            b.idx.append(idx)
            b.val.append(val)
            b.hs.append(h)
            b.dlogps.append(policy.dlogp(p, a))
            b.p_up.append(float(p) if p.ndim == 0 else float(p[0]))
            actions.append(outputs[a])

        # step the emulators
        frames, rewards, dones = envs.step(actions)
        state.steps += n

        # record; finish episodes; update every batch_size episodes
        for i in range(n):
            bufs[i].rewards.append(rewards[i])
            prev[i] = None if dones[i] else cur[i]
            cur[i] = binarize(frames[i], cfg.crop)
            if not dones[i] or state.episode >= cfg.episodes:
                continue
            metrics = finish_episode(cfg, state, bufs[i])
            bufs[i] = EpisodeBuffer()
            elapsed = time.monotonic() - start
            steps_per_s = (state.steps - start_steps) / max(elapsed, 1e-9)
            if state.batch_episodes == cfg.batch_size:
                metrics.update(update(cfg, state))
            metrics["time/steps_per_s"] = steps_per_s
            tracker.log_metrics(metrics, step=state.episode)
            progress.update(state.episode, state.running, steps_per_s, elapsed)
            if state.episode % cfg.checkpoint_every == 0:
                ckpt_due = True
            for cb in callbacks:
                cb(state.episode, metrics)

        # checkpoint phase: after a whole step, where every env's rollout is consistent
        reason = stop() if stop is not None else None
        if ckpt_due or reason:
            save_model(out_dir / "model.npz", cfg, state)
            ckpt = write_checkpoint(cfg, state, rng, envs, (bufs, cur, prev), ckpt_dir, ckpt_meta)
            ckpt_due, ckpt_steps = False, state.steps
            if reason:
                progress.close()
                raise Interrupted(reason, state.episode, str(ckpt))

    if ckpt_steps != state.steps:   # the end state, so a longer run can resume from it
        write_checkpoint(cfg, state, rng, envs, (bufs, cur, prev), ckpt_dir, ckpt_meta)
    progress.close()
    elapsed = time.monotonic() - start
    model_path = save_model(out_dir / "model.npz", cfg, state)
    return {"episodes": state.episode, "steps": state.steps, "updates": state.updates,
            "running_reward": state.running, "rewards": state.rewards, "elapsed_s": elapsed,
            "steps_per_s": (state.steps - start_steps) / max(elapsed, 1e-9), "model_path": str(model_path)}
