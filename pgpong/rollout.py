"""Rollout: act for all envs at once, record each env's episode compactly, hand back finished ones.

The phases of one agent step for N envs (the trainer's loop):
    actions = rollout.act(params, rng, version)   # preprocess, batched sparse forward, sample
    envs.send(actions)                            # the emulators run on their own threads ...
    rollout.record_acts()                         # ... while this thread files the step per env
    (finish the episodes that ended last step: gradient, update, log)
    frames, rewards, dones = envs.recv()
    finished = rollout.record_step(frames, rewards, dones)

Each env's episode is kept apart in its own EpisodeBuffer: the non-zero indices (int32) and
values (int8) of its inputs, hidden states, d log pi / d logit, P(UP), rewards and the parameter
version each step was acted with (float32 or the params' dtype; no dense input copies).
"""
import numpy as np

from pgpong import policy
from pgpong.preprocess import batch_input, binarize_batch, crop_window, sparse_rows


class EpisodeBuffer:
    """One env's current episode, in growable arrays (doubling), read back trimmed to its length."""

    def __init__(self, H: int, dtype, n_out: int, capacity: int = 512):
        self.T = 0
        self.idx: list = []                                       # per step: (k,) int32 non-zero input indices
        self.val: list = []                                       # per step: (k,) int8 values in {-1, +1}
        dl_shape = (capacity,) if n_out == 2 else (capacity, n_out)
        self._hs = np.empty((capacity, H), dtype)                 # (cap, H) hidden state at acting time
        self._dlogps = np.empty(dl_shape, dtype)                  # (cap,) or (cap, 3)
        self._p_up = np.empty(capacity, dtype)                    # (cap,) P(UP)
        self._rewards = np.zeros(capacity)                        # (cap,) reward after the action
        self._version = np.empty(capacity, np.int64)              # (cap,) updates done when acting

    def __len__(self) -> int:
        return self.T

    def _grow(self) -> None:
        for name in ("_hs", "_dlogps", "_p_up", "_rewards", "_version"):
            old = getattr(self, name)
            new = np.zeros((2 * len(old),) + old.shape[1:], old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    def add(self, idx, val, h, dlogp, p_up, version) -> None:
        """File one step's action side (its reward comes with `set_reward`)."""
        t = self.T
        if t == len(self._rewards):
            self._grow()
        self.idx.append(idx)
        self.val.append(val)
        self._hs[t] = h
        self._dlogps[t] = dlogp
        self._p_up[t] = p_up
        self._version[t] = version
        self.T = t + 1

    def set_reward(self, r: float) -> None:
        self._rewards[self.T - 1] = r

    hs = property(lambda self: self._hs[:self.T])                 # (T, H)
    dlogps = property(lambda self: self._dlogps[:self.T])         # (T,) or (T, 3)
    p_up = property(lambda self: self._p_up[:self.T])             # (T,)
    rewards = property(lambda self: self._rewards[:self.T])       # (T,)
    version = property(lambda self: self._version[:self.T])       # (T,)


class Rollout:
    """The episodes in flight of N envs: their last binarized frames and episode buffers."""

    def __init__(self, cfg, frames, H: int, dtype):
        self.window, self.kind = crop_window(cfg.crop), cfg.input.kind
        self.outputs = np.asarray(policy.ACTIONS[cfg.actions.kind], np.int64)   # env action of each output
        self.H, self.dtype = H, np.dtype(dtype)
        self.cur = binarize_batch(frames, self.window)              # (N, F) uint8
        self.n = len(self.cur)
        self.prev = np.zeros_like(self.cur)                       # (N, F) uint8
        self.has_prev = np.zeros(self.n, bool)                    # (N,) False on an episode's first step
        self.bufs = [self._new_buffer() for _ in range(self.n)]
        self._acted = None

    def _new_buffer(self) -> EpisodeBuffer:
        return EpisodeBuffer(self.H, self.dtype, len(self.outputs))

    def act(self, params: dict, rng: np.random.Generator, version: int) -> np.ndarray:
        """Env actions (N,) for the current frames: batched sparse forward, one draw per env."""
        x = batch_input(self.cur, self.prev, self.has_prev, self.kind)   # (N, D) int8
        indptr, cols, vals = sparse_rows(x)                              # CSR: (N+1,), (K,), (K,)
        h = policy.hidden_batch(params["W1"], indptr, cols, vals)        # (N, H)
        p = policy.probs(params["W2"], h)                                # (N,) or (N, 3)
        a = policy.sample_batch(rng, p)                                  # (N,)
        dl = policy.dlogp_batch(p, a)
        p_up = p if p.ndim == 1 else p[:, 0]
        self._acted = (indptr.tolist(), cols, vals, h, dl, p_up, version)
        return self.outputs[a]

    def record_acts(self) -> None:
        """File the last `act` into each env's episode buffer."""
        bounds, cols, vals, h, dl, p_up, version = self._acted
        for i, b in enumerate(self.bufs):
            s, e = bounds[i], bounds[i + 1]
            b.add(cols[s:e], vals[s:e], h[i], dl[i], p_up[i], version)
        self._acted = None

    def record_step(self, frames, rewards, dones) -> list[tuple[int, EpisodeBuffer]]:
        """Rewards and new frames of a step; returns (env, buffer) of every episode that just ended."""
        finished = []
        for i, b in enumerate(self.bufs):
            b.set_reward(rewards[i])
        for i in np.flatnonzero(dones).tolist():
            finished.append((i, self.bufs[i]))
            self.bufs[i] = self._new_buffer()
        self.prev, self.cur = self.cur, binarize_batch(frames, self.window)
        self.has_prev = ~np.asarray(dones, bool)
        return finished
