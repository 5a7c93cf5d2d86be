"""Rollout: act for all envs at once, record each env's episode compactly, hand back finished ones.

The phases of one agent step for N envs (the trainer's loop):
    actions = rollout.act(params, rng, version)   # preprocess, batched sparse forward, sample
    envs.send(actions)                            # the emulators run on their own threads ...
    rollout.record_acts()                         # ... while this thread files the step per env
    (finish the episodes that ended last step: gradient, update, log)
    frames, rewards, dones = envs.recv()
    finished = rollout.record_step(frames, rewards, dones)

Each env's episode is kept apart: the non-zero indices (int32) and values (int8) of its inputs,
hidden states, d log pi / d logit, P(UP), rewards and the parameter version each step was acted
with (the params' dtype, float32 by default; no dense input copies), stored step by step for
all envs at once and read out per env when its episode ends.
"""
from dataclasses import dataclass

import numpy as np

from pgpong.core import policy
from pgpong.core.preprocess import (
    BACKGROUND_GRAY,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    GrayWords,
    batch_input,
    binarize_batch,
    diff_rows,
    frame_words,
    gray_words,
    sparse_rows,
    words_binarized,
)


@dataclass
class Episode:
    """One env's finished episode: what its gradient needs, T steps."""
    idx: list                 # per step: (k,) int32 non-zero input indices
    val: list                 # per step: (k,) int8 values in {-1, +1}
    hs: np.ndarray            # (T, H) hidden states at acting time
    dlogps: np.ndarray        # (T,) or (T, 3) d log pi / d logit
    p_up: np.ndarray          # (T,) P(UP)
    rewards: np.ndarray       # (T,) reward after each action
    version: np.ndarray       # (T,) optimizer updates done when each step was acted

    def __len__(self) -> int:
        return len(self.rewards)


class Rollout:
    """The episodes in flight of N envs: their last binarized frames and a ring of recent steps.

    Grayscale frames are kept as the words of the crop's rows (`frame_words`): a diff input is
    read off the words that changed, and the binarized frames are made only when asked for
    (checkpoints, raw and stack inputs).

    Step s of all envs is one row of each ring array (written once per step for all envs, not
    per env); env i's episode is the rows from its start step on, read out (one fancy index per
    array) when it ends. The ring doubles when the longest episode in flight would outgrow it.
    """

    def __init__(self, frames, window: tuple[slice, slice], input_kind: str, actions: str, H: int, dtype,
                 capacity: int = 1024):
        """frames: the envs' first frames; window: `crop_window(crop)`; input_kind: diff | raw | stack;
        actions: two | three (policy.ACTIONS); H: hidden units; dtype: the weights' dtype."""
        self._setup(binarize_batch(frames, window), window, input_kind, actions, H, dtype, capacity)
        self._words = self._frame_words(frames)
        if self._words is not None:                               # prev: all background, as the zero prev
            self._spare = self._frame_words(np.full_like(frames, BACKGROUND_GRAY[0]))

    def _setup(self, cur: np.ndarray, window, input_kind: str, actions: str, H: int, dtype, capacity: int) -> None:
        self.window, self.kind = window, input_kind
        self.outputs = np.asarray(policy.ACTIONS[actions], np.int64)   # env action of each output
        self._cur = cur                                           # (N, F) uint8, or None: made from the words
        self.n = n = len(cur)
        self._prev = np.zeros_like(cur)                           # (N, F) uint8, or None: made from the words
        self.has_prev = np.zeros(n, bool)                         # (N,) False on an episode's first step
        self.s = 0                                                # steps acted so far
        self.start = np.zeros(n, np.int64)                        # (N,) step at which each env's episode began
        dl_shape = (n,) if len(self.outputs) == 2 else (n, len(self.outputs))
        self._rings = {                                           # (S, ...) one row per step
            "hs": np.empty((capacity, n, H), dtype),
            "dlogps": np.empty((capacity,) + dl_shape, dtype),
            "p_up": np.empty((capacity, n), dtype),
            "rewards": np.zeros((capacity, n)),
            "version": np.empty(capacity, np.int64),
        }
        self._inputs = [None] * capacity                          # per step: (bounds, cols, vals) CSR of all envs
        self._acted = None
        self._gw: GrayWords | None = gray_words(window, n)
        self._words = self._spare = None                          # `frame_words` of cur's, prev's frames, or None
        self._x = None                                            # CSR of cur - prev, when read off the words

    @property
    def cur(self) -> np.ndarray:
        """(N, F) uint8: the envs' current binarized frames."""
        if self._cur is None:
            self._cur = words_binarized(self._words, self._gw)
        return self._cur

    @property
    def prev(self) -> np.ndarray:
        """(N, F) uint8: the envs' previous binarized frames (ignored where not has_prev)."""
        if self._prev is None:
            self._prev = words_binarized(self._spare, self._gw)
        return self._prev

    def act(self, params: dict, rng: np.random.Generator, version: int) -> np.ndarray:
        """Env actions (N,) for the current frames: batched sparse forward, one draw per env."""
        if self._x is not None:
            indptr, cols, vals = self._x                                 # CSR: (N+1,), (K,), (K,)
        else:
            x = batch_input(self.cur, self.prev, self.has_prev, self.kind)   # (N, D) int8
            indptr, cols, vals = sparse_rows(x)
        h = policy.hidden_batch(params["W1"], indptr, cols, vals)        # (N, H)
        p = policy.probs(params["W2"], h)                                # (N,) or (N, 3)
        a = policy.sample_batch(rng, p)                                  # (N,)
        self._acted = (indptr, cols, vals, h, p, a, version)
        return self.outputs[a]

    def _grow(self) -> None:
        S = len(self._inputs)
        live = np.arange(int(self.start.min()), self.s)
        old, new = live % S, live % (2 * S)
        for k, ring in self._rings.items():
            bigger = np.zeros((2 * S,) + ring.shape[1:], ring.dtype)
            bigger[new] = ring[old]
            self._rings[k] = bigger
        inputs = [None] * (2 * S)
        for o, nw in zip(old.tolist(), new.tolist()):
            inputs[nw] = self._inputs[o]
        self._inputs = inputs

    def record_acts(self) -> None:
        """File the last `act` as the next row of the ring (all envs at once)."""
        indptr, cols, vals, h, p, a, version = self._acted
        if self.s - int(self.start.min()) >= len(self._inputs):
            self._grow()
        j = self.s % len(self._inputs)
        r = self._rings
        r["hs"][j] = h
        r["dlogps"][j] = policy.dlogp_batch(p, a)
        r["p_up"][j] = p if p.ndim == 1 else p[:, 0]
        r["rewards"][j] = 0.0
        r["version"][j] = version
        self._inputs[j] = (indptr.tolist(), cols, vals)
        self.s += 1
        self._acted = None

    def _episode(self, i: int) -> Episode:
        steps = np.arange(int(self.start[i]), self.s) % len(self._inputs)
        r = self._rings
        idx, val = [], []
        for j in steps.tolist():
            bounds, cols, vals = self._inputs[j]
            b0, b1 = bounds[i], bounds[i + 1]
            idx.append(cols[b0:b1])
            val.append(vals[b0:b1])
        return Episode(idx, val, r["hs"][steps, i], r["dlogps"][steps, i], r["p_up"][steps, i],
                       r["rewards"][steps, i], r["version"][steps])

    def record_step(self, frames, rewards, dones) -> list[tuple[int, Episode]]:
        """Rewards and new frames of a step; returns (env, episode) of every episode that just ended."""
        self._rings["rewards"][(self.s - 1) % len(self._inputs)] = rewards
        finished = []
        ended = np.flatnonzero(dones).tolist()
        for i in ended:
            finished.append((i, self._episode(i)))
            self.start[i] = self.s
        self.has_prev = ~np.asarray(dones, bool)
        self._new_frames(frames, ended)
        return finished

    def _frame_words(self, frames, out=None) -> np.ndarray | None:
        """`frame_words` of grayscale frames; None for others (RGB, or not C-contiguous)."""
        if (self._gw is None or not isinstance(frames, np.ndarray) or frames.dtype != np.uint8
                or frames.shape != (self.n, FRAME_HEIGHT, FRAME_WIDTH) or not frames.flags.c_contiguous):
            return None
        return frame_words(frames, self._gw, out)

    def _new_frames(self, frames, ended: list) -> None:
        """frames become cur and cur prev: read off the words when the last frames' words are kept."""
        words = self._frame_words(frames, self._spare)
        if words is None or self._words is None:
            self._prev, self._cur = self.cur, binarize_batch(frames, self.window)
            self._x = None
        else:
            self._prev, self._cur = self._cur, None
            self._x = (diff_rows(words, self._words, self.has_prev if ended else None, self._gw)
                       if self.kind == "diff" else None)
        self._spare, self._words = self._words, words

    # --- checkpoints: the episodes in flight, written out and read back row for row -------------

    def in_flight(self) -> list[Episode]:
        """Each env's unfinished episode (the step acted last, not yet stepped, has reward 0)."""
        return [self._episode(i) for i in range(self.n)]

    @classmethod
    def resume(cls, cur, prev, has_prev, episodes: list[Episode], window: tuple[slice, slice], input_kind: str,
               actions: str, H: int, dtype) -> "Rollout":
        """A Rollout whose envs' episodes in flight are `episodes` (from `in_flight`), frames as saved.

        Env i's steps become the last len(episodes[i]) rows of the ring, so rows stay aligned
        across envs as they were (one row per agent step, the same parameter version for all).
        """
        ro = cls.__new__(cls)
        S = max(len(e) for e in episodes)
        capacity = 1024
        while capacity <= S:
            capacity *= 2
        ro._setup(np.array(cur, np.uint8), window, input_kind, actions, H, dtype, capacity)
        ro._prev, ro.has_prev = np.array(prev, np.uint8), np.array(has_prev, bool)
        ro.s = S
        ro.start = np.asarray([S - len(e) for e in episodes], np.int64)
        r = ro._rings
        for i, e in enumerate(episodes):
            rows = np.arange(S - len(e), S)
            for k in ("hs", "dlogps", "p_up", "rewards"):
                r[k][rows, i] = getattr(e, k)
            r["version"][rows] = e.version
        for j in range(S):
            bounds, cols, vals = [0], [], []
            for i, e in enumerate(episodes):
                t = j - int(ro.start[i])
                if t >= 0:
                    cols.append(np.asarray(e.idx[t], np.int32))
                    vals.append(np.asarray(e.val[t], np.int8))
                bounds.append(bounds[-1] + (len(cols[-1]) if t >= 0 else 0))
            ro._inputs[j] = (bounds, np.concatenate(cols) if cols else np.zeros(0, np.int32),
                             np.concatenate(vals) if vals else np.zeros(0, np.int8))
        return ro
