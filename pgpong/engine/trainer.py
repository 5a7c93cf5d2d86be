"""The training loop: rollout -> episode gradient -> update every batch_size episodes -> log.

`train` receives its collaborators (envs, tracker, rng, callbacks) and returns a summary; it
never imports MLflow or Optuna. The envs come in groups (one, or two for the vector path)
stepped in turn; per group and step: collect its frames, rewards and dones; act (forward +
sample for its envs, see pgpong/engine/rollout.py) and restart its emulators; then, while they run,
per episode that just finished: gradient, accumulate, log; per batch: update. The actions of
the step after an episode's end are chosen before that episode is learned from: only the first
step of the next episode can be acted with pre-update parameters (with diff inputs its x = 0,
so P(UP) = 0.5 whatever the parameters). After every group's step: the checkpoint phase
(every `checkpoint_every` episodes, on a stop signal, at the end), where each group's next
step is chosen and sent and every finished episode learned, so a checkpoint is one consistent
state (see pgpong/engine/state.py::checkpoint_state). The tracker is flushed first: every metric
a checkpoint covers is written (or kept on disk by the tracker) before the checkpoint exists, so
a run resumed from it after a hard kill has lost none of them.
"""
import functools
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from pgpong.core import optim
from pgpong.core.gradient import episode_gradient, input_matrix
from pgpong.core.returns import running_mean
from pgpong.engine.progress import Progress
from pgpong.engine.rollout import Episode
from pgpong.engine.state import (
    Live,
    TrainState,
    new_state,
    save_model,
    start_rollouts,
    write_checkpoint,
)
from pgpong.errors import Diverged, Interrupted


def optimizer(cfg):
    """optim.step with the config's numbers bound: (params, grads, opt_state) -> (params, opt_state)."""
    hyper = {k: v for k, v in OmegaConf.to_container(cfg.optim).items() if k != "name"}
    return functools.partial(optim.step, name=cfg.optim.name, lr=cfg.lr, value_lr=cfg.baseline.get("lr", cfg.lr),
                             decay_rate=cfg.decay_rate, **hyper)


def finish_episode(state: TrainState, buf: Episode, gamma: float, baseline: str) -> dict:
    """Gradient of one finished episode into the batch buffer; its stats for logging."""
    D = state.params["W1"].shape[0]
    dtype = state.params["W1"].dtype
    X = input_matrix(buf.indptr, buf.cols, buf.vals, D, dtype)      # (T, D) sparse
    Hs = buf.hs                                                      # (T, H)
    dlogps = np.asarray(buf.dlogps, dtype)                           # (T,) or (T, 3)
    rewards = np.asarray(buf.rewards, np.float64)                    # (T,)
    grads, info = episode_gradient(state.params, X, Hs, dlogps, rewards, gamma, baseline)
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
    state.batch_stale_steps += int(np.count_nonzero(buf.version < state.updates))
    state.batch_value_loss += info.get("value_loss", 0.0)
    return {"episode/reward": reward, "episode/running_reward": state.running, "episode/length": len(buf)}


def update(state: TrainState, step) -> dict:
    """Apply the optimizer `step` (see `optimizer`) to the summed batch gradient; stats of the batch for logging."""
    grad_norm = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in state.grad_buffer.values())))
    params, opt_state = step(state.params, state.grad_buffer, state.opt_state)
    check_finite(state.episode, {f"weights {k} after update {state.updates + 1}": w for k, w in params.items()})
    state.params, state.opt_state = params, opt_state
    stats = {"train/grad_norm": grad_norm, "train/p_up_mean": state.batch_p_up / max(state.batch_steps, 1),
             "train/update": state.updates + 1,
             "train/stale_step_fraction": state.batch_stale_steps / max(state.batch_steps, 1)}
    if "Wv" in state.params:     # the learned value baseline
        stats["train/value_loss"] = state.batch_value_loss / max(state.batch_episodes, 1)
    state.updates += 1
    state.grad_buffer = {k: np.zeros_like(v) for k, v in state.params.items()}
    state.batch_episodes = state.batch_steps = state.batch_stale_steps = 0
    state.batch_p_up = state.batch_value_loss = 0.0
    return stats


def check_finite(episode: int, arrays: dict) -> None:
    """Raise Diverged naming the first array holding NaN or inf."""
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise Diverged(f"diverged at episode {episode}: {name} holds NaN or inf; "
                           f"try a smaller lr (the last good checkpoint is kept)")


def train(cfg, envs, tracker, rng: np.random.Generator, out_dir, callbacks=(), state: TrainState | None = None,
          live: Live | None = None, progress: Progress | None = None, stop=None, ckpt_meta: dict | None = None) -> dict:
    """Train until cfg.episodes episodes have finished, or until the running reward passes
    cfg.stop_at; returns a summary of the run.

    state and live: where a checkpoint left training (pgpong/engine/state.py::restore_state);
    without them, fresh weights from rng and fresh episodes on every env.

    `stop()` is polled once per step; when it returns a reason (e.g. "SIGINT") a checkpoint is
    written and Interrupted raised. NaN/inf raise Diverged before anything bad is saved.
    """
    out_dir = Path(out_dir)
    state = state or new_state(cfg, rng)
    progress = progress or Progress(cfg.episodes, cfg.log_every_s)
    groups = envs.groups       # stepped in turn: learning and acting for one overlap the others' emulation
    live = live or start_rollouts(cfg, envs)
    rollouts, sent = live.rollouts, live.sent
    episodes, batch_size, checkpoint_every = cfg.episodes, cfg.batch_size, cfg.checkpoint_every
    stop_at = cfg.get("stop_at")      # None: train every episode
    gamma, baseline, step = cfg.gamma, cfg.baseline.kind, optimizer(cfg)
    start, start_steps = time.monotonic(), state.steps
    ckpt_dir, ckpt_due, ckpt_steps = out_dir / "checkpoints", False, state.steps

    def learn(finished) -> bool:
        """Gradient of each finished episode into the batch, update every batch_size episodes, log.

        Episodes past the target count go to live.leftover; returns whether a checkpoint is due.
        """
        nonlocal episodes
        due = False
        for j, buf in enumerate(finished):
            if state.episode >= episodes:
                live.leftover.extend(finished[j:])
                break
            metrics = finish_episode(state, buf, gamma, baseline)
            elapsed = time.monotonic() - start
            steps_per_s = (state.steps - start_steps) / max(elapsed, 1e-9)
            if state.batch_episodes == batch_size:
                metrics.update(update(state, step))
            metrics["time/steps_per_s"] = steps_per_s
            tracker.log_metrics(metrics, step=state.episode)
            progress.update(state.episode, state.running, steps_per_s, elapsed)
            due |= state.episode % checkpoint_every == 0
            for cb in callbacks:
                cb(state.episode, metrics)
            if stop_at is not None and state.running > stop_at:
                episodes = state.episode        # target reached: this episode is the run's last
        return due

    try:
        for k, (g, ro) in enumerate(zip(groups, rollouts)):   # every group acts on its first frames
            if sent[k] is None:                                # (a restored step was chosen already)
                sent[k] = ro.act(state.params, rng, state.updates)
                ro.record_acts()
            g.send(sent[k])
        leftover, live.leftover = live.leftover, []
        ckpt_due = learn(leftover)                             # a resumed run's episodes still to learn

        while state.episode < episodes:
            for k, (g, ro) in enumerate(zip(groups, rollouts)):
                if state.episode >= episodes:
                    break
                # step: collect the group's frames, rewards and done flags; close its finished episodes
                frames, rewards, dones = g.recv()
                state.steps += ro.n
                finished = ro.record_step(frames, rewards, dones)

                # act: batched forward pass and sampling for the group's envs, then restart its emulators
                sent[k] = ro.act(state.params, rng, state.updates)
                g.send(sent[k])
                ro.record_acts()

                # learn while the emulators run
                if finished:
                    ckpt_due |= learn([buf for _, buf in finished])

            # checkpoint phase: after every group's step, where the rollouts are consistent
            # (each group's next step chosen and sent, its row recorded, its finished episodes learned)
            reason = stop() if stop is not None else None
            if ckpt_due or reason:
                tracker.flush()
                save_model(out_dir / "model.npz", cfg, state)
                ckpt = write_checkpoint(cfg, state, rng, envs, live, ckpt_dir, ckpt_meta)
                ckpt_due, ckpt_steps = False, state.steps
                if reason:
                    progress.close()
                    raise Interrupted(reason, state.episode, str(ckpt))

        if ckpt_steps != state.steps:   # the end state, so a longer run can resume from it
            tracker.flush()
            write_checkpoint(cfg, state, rng, envs, live, ckpt_dir, ckpt_meta)
    finally:
        for g in groups:                                  # steps sent but not collected: dropped
            g.cancel()
    progress.close()
    elapsed = time.monotonic() - start
    model_path = save_model(out_dir / "model.npz", cfg, state)
    return {"episodes": state.episode, "steps": state.steps, "updates": state.updates,
            "running_reward": state.running, "rewards": state.rewards, "elapsed_s": elapsed,
            "steps_per_s": (state.steps - start_steps) / max(elapsed, 1e-9), "model_path": str(model_path)}
