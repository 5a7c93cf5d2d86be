"""The training loop: rollout -> episode gradient -> update every batch_size episodes -> log.

`train` receives its collaborators (envs, tracker, rng, callbacks) and returns a summary; it
never imports MLflow or Optuna. The envs come in groups (one, or two for the vector path)
stepped in turn; per group and step: collect its frames, rewards and dones; act (forward +
sample for its envs, see pgpong/rollout.py) and restart its emulators; then, while they run,
per episode that just finished: gradient, accumulate, log; per batch: update. The actions of
the step after an episode's end are chosen before that episode is learned from: only the first
step of the next episode can be acted with pre-update parameters (with diff inputs its x = 0,
so P(UP) = 0.5 whatever the parameters).
"""
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from pgpong import checkpoint, optim, policy
from pgpong.gradient import episode_gradient, episode_matrix
from pgpong.preprocess import input_size
from pgpong.progress import Progress
from pgpong.returns import running_mean
from pgpong.rollout import EpisodeBuffer, Rollout


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
    Hs = buf.hs                                                      # (T, H)
    dlogps = np.asarray(buf.dlogps, dtype)                           # (T,) or (T, 3)
    rewards = np.asarray(buf.rewards, np.float64)                    # (T,)
    grads, info = episode_gradient(state.params, X, Hs, dlogps, rewards, cfg.gamma, cfg.baseline.kind)
    for k, g in grads.items():
        state.grad_buffer[k] += g
    reward = float(rewards.sum())
    state.episode += 1
    state.running = running_mean(state.running, reward)
    state.rewards.append(reward)
    state.batch_episodes += 1
    state.batch_steps += len(buf)
    state.batch_p_up += float(np.sum(buf.p_up))
    state.batch_stale_steps += int(np.count_nonzero(buf.version < state.updates))
    state.batch_value_loss += info.get("value_loss", 0.0)
    return {"episode/reward": reward, "episode/running_reward": state.running, "episode/length": len(buf)}


def update(cfg, state: TrainState) -> dict:
    """Apply the optimizer to the summed batch gradient; stats of the batch for logging."""
    grad_norm = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in state.grad_buffer.values())))
    state.params, state.opt_state = optim.step(cfg, state.params, state.grad_buffer, state.opt_state)
    stats = {"train/grad_norm": grad_norm, "train/p_up_mean": state.batch_p_up / max(state.batch_steps, 1),
             "train/update": state.updates + 1,
             "train/stale_step_fraction": state.batch_stale_steps / max(state.batch_steps, 1)}
    if cfg.baseline.kind == "value":
        stats["train/value_loss"] = state.batch_value_loss / max(state.batch_episodes, 1)
    state.updates += 1
    state.grad_buffer = {k: np.zeros_like(v) for k, v in state.params.items()}
    state.batch_episodes = state.batch_steps = state.batch_stale_steps = 0
    state.batch_p_up = state.batch_value_loss = 0.0
    return stats


def train(cfg, envs, tracker, rng: np.random.Generator, out_dir, callbacks=(), state: TrainState | None = None,
          progress: Progress | None = None) -> dict:
    """Train until cfg.episodes episodes have finished; returns a summary of the run."""
    out_dir = Path(out_dir)
    state = state or new_state(cfg, rng)
    progress = progress or Progress(cfg.episodes, cfg.log_every_s)
    groups = envs.groups       # stepped in turn: learning and acting for one overlap the others' emulation
    rollouts = [Rollout(cfg, g.reset(), cfg.H, state.params["W1"].dtype) for g in groups]
    episodes, batch_size, checkpoint_every = cfg.episodes, cfg.batch_size, cfg.checkpoint_every   # plain ints:
    start, start_steps = time.monotonic(), state.steps                                           # config reads are slow
    for g, ro in zip(groups, rollouts):      # every group acts on its first frames
        g.send(ro.act(state.params, rng, state.updates))
        ro.record_acts()

    while state.episode < episodes:
        for g, ro in zip(groups, rollouts):
            # step: collect the group's frames, rewards and done flags; close its finished episodes
            frames, rewards, dones = g.recv()
            state.steps += ro.n
            finished = ro.record_step(frames, rewards, dones)

            # act: batched forward pass and sampling for the group's envs, then restart its emulators
            g.send(ro.act(state.params, rng, state.updates))
            ro.record_acts()

            # learn while the emulators run: gradient of each finished episode into the batch,
            # update every batch_size episodes, log
            for _, buf in finished:
                if state.episode >= episodes:
                    break
                metrics = finish_episode(cfg, state, buf)
                elapsed = time.monotonic() - start
                steps_per_s = (state.steps - start_steps) / max(elapsed, 1e-9)
                if state.batch_episodes == batch_size:
                    metrics.update(update(cfg, state))
                metrics["time/steps_per_s"] = steps_per_s
                tracker.log_metrics(metrics, step=state.episode)
                progress.update(state.episode, state.running, steps_per_s, elapsed)
                if state.episode % checkpoint_every == 0:
                    save_model(out_dir / "model.npz", cfg, state)
                for cb in callbacks:
                    cb(state.episode, metrics)
    for g in groups:                         # the steps already started
        g.recv()

    progress.close()
    elapsed = time.monotonic() - start
    model_path = save_model(out_dir / "model.npz", cfg, state)
    return {"episodes": state.episode, "steps": state.steps, "updates": state.updates,
            "running_reward": state.running, "rewards": state.rewards, "elapsed_s": elapsed,
            "steps_per_s": (state.steps - start_steps) / max(elapsed, 1e-9), "model_path": str(model_path)}
