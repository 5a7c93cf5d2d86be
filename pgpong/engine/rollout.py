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
all envs at once and read out per env, with a few whole-array operations, when its episode ends.
"""
from dataclasses import dataclass

import numpy as np

from pgpong.core import policy
from pgpong.core.gradient import steps_csr
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
    """One env's finished episode: what its gradient needs, T steps.

    Its inputs are one CSR matrix: step t's non-zero input indices are cols[indptr[t]:indptr[t + 1]]
    and their values (-1 or +1) the same slice of vals.
    """
    indptr: np.ndarray        # (T + 1,) int64
    cols: np.ndarray          # (K,) int32 non-zero input indices, step after step
    vals: np.ndarray          # (K,) int8 their values in {-1, +1}
    hs: np.ndarray            # (T, H) hidden states at acting time
    dlogps: np.ndarray        # (T,) or (T, 3) d log pi / d logit
    p_up: np.ndarray          # (T,) P(UP)
    rewards: np.ndarray       # (T,) reward after each action
    version: np.ndarray       # (T,) optimizer updates done when each step was acted

    @classmethod
    def from_steps(cls, idx: list, val: list, **fields) -> "Episode":
        """An episode from per-step index and value arrays (idx[t], val[t]) and the other fields."""
        indptr, cols, vals = steps_csr(idx, val)
        return cls(indptr, cols.astype(np.int32, copy=False), vals.astype(np.int8, copy=False), **fields)

    @property
    def idx(self) -> list:
        """Per step: (k,) int32 non-zero input indices."""
        return np.split(self.cols, self.indptr[1:-1])

    @property
    def val(self) -> list:
        """Per step: (k,) int8 values in {-1, +1}."""
        return np.split(self.vals, self.indptr[1:-1])

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
    The sparse inputs of a step (all envs, CSR) go to the end of a flat ring of indices and
    values; a row keeps where its block starts and its envs' bounds within it.
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
        self.oldest = 0                                           # start.min(): the oldest step still in flight
        dl_shape = (n,) if len(self.outputs) == 2 else (n, len(self.outputs))
        self._rings = {                                           # (S, ...) one row per step
            "hs": np.empty((capacity, n, H), dtype),
            "dlogps": np.empty((capacity,) + dl_shape, dtype),
            "p_up": np.empty((capacity, n), dtype),
            "rewards": np.zeros((capacity, n)),
            "version": np.empty(capacity, np.int64),
            "offset": np.zeros(capacity, np.int64),              # where the step's inputs start in the flat ring
            "bounds": np.zeros((capacity, n + 1), np.int64),    # its envs' inputs: offset + bounds[i] .. bounds[i+1]
        }
        self._cols = np.empty(capacity * 64, np.int32)           # flat ring of all steps' non-zero input indices
        self._vals = np.empty(capacity * 64, np.int8)            # ... and their values
        self._end = 0                                             # flat position after the last step's inputs
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

    @property
    def _capacity(self) -> int:
        return len(self._rings["version"])

    def _live_start(self) -> int:
        """Flat position of the oldest input still in flight."""
        first = self.oldest
        return int(self._rings["offset"][first % self._capacity]) if first < self.s else self._end

    def _grow(self) -> None:
        S = self._capacity
        live = np.arange(self.oldest, self.s)
        old, new = live % S, live % (2 * S)
        for k, ring in self._rings.items():
            bigger = np.zeros((2 * S,) + ring.shape[1:], ring.dtype)
            bigger[new] = ring[old]
            self._rings[k] = bigger

    def _grow_flat(self, need: int) -> None:
        """A flat ring that holds `need` more values past the live ones, the live ones moved over."""
        C, live = len(self._cols), np.arange(self._live_start(), self._end)
        size = 2 * C
        while size < len(live) + need:
            size *= 2
        for name in ("_cols", "_vals"):
            old = getattr(self, name)
            bigger = np.empty(size, old.dtype)
            bigger[live % size] = old[live % C]
            setattr(self, name, bigger)

    def _file_inputs(self, cols: np.ndarray, vals: np.ndarray) -> int:
        """Append a step's inputs to the flat ring; returns the flat position they start at."""
        K, C = len(cols), len(self._cols)
        if self._end + K - self._live_start() > C:
            self._grow_flat(K)
            C = len(self._cols)
        start, p = self._end, self._end % C
        first = min(K, C - p)                       # up to the ring's end, the rest from its start
        self._cols[p:p + first], self._cols[:K - first] = cols[:first], cols[first:]
        self._vals[p:p + first], self._vals[:K - first] = vals[:first], vals[first:]
        self._end += K
        return start

    def record_acts(self) -> None:
        """File the last `act` as the next row of the ring (all envs at once)."""
        indptr, cols, vals, h, p, a, version = self._acted
        if self.s - self.oldest >= self._capacity:
            self._grow()
        j = self.s % self._capacity
        r = self._rings
        r["hs"][j] = h
        r["dlogps"][j] = policy.dlogp_batch(p, a)
        r["p_up"][j] = p if p.ndim == 1 else p[:, 0]
        r["rewards"][j] = 0.0
        r["version"][j] = version
        r["bounds"][j] = indptr
        r["offset"][j] = self._file_inputs(cols, vals)
        self.s += 1
        self._acted = None

    def _episode(self, i: int) -> Episode:
        steps = np.arange(int(self.start[i]), self.s) % self._capacity
        r = self._rings
        b0, b1 = r["bounds"][steps, i], r["bounds"][steps, i + 1]    # (T,) each step's inputs of env i
        lengths = b1 - b0
        indptr = np.zeros(len(steps) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        first = r["offset"][steps] + b0                              # flat position of each step's first
        flat = (np.repeat(first - indptr[:-1], lengths) + np.arange(indptr[-1])) % len(self._cols)
        return Episode(indptr, self._cols[flat], self._vals[flat], r["hs"][steps, i], r["dlogps"][steps, i],
                       r["p_up"][steps, i], r["rewards"][steps, i], r["version"][steps])

    def record_step(self, frames, rewards, dones) -> list[tuple[int, Episode]]:
        """Rewards and new frames of a step; returns (env, episode) of every episode that just ended."""
        self._rings["rewards"][(self.s - 1) % self._capacity] = rewards
        finished = []
        ended = np.flatnonzero(dones).tolist()
        for i in ended:
            finished.append((i, self._episode(i)))
            self.start[i] = self.s
        if ended:
            self.oldest = int(self.start.min())
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
        ro.oldest = int(ro.start.min())
        r = ro._rings
        for i, e in enumerate(episodes):
            rows = np.arange(S - len(e), S)
            for k in ("hs", "dlogps", "p_up", "rewards"):
                r[k][rows, i] = getattr(e, k)
            r["version"][rows] = e.version
        for j in range(S):                       # step j's inputs: each env's step j - start, if begun
            parts = [(e, j - int(ro.start[i])) for i, e in enumerate(episodes)]
            spans = [(e.indptr[t], e.indptr[t + 1]) if t >= 0 else (0, 0) for e, t in parts]
            r["bounds"][j, 1:] = np.cumsum([b1 - b0 for b0, b1 in spans])
            cols = np.concatenate([e.cols[b0:b1] for (e, _), (b0, b1) in zip(parts, spans)]).astype(np.int32)
            vals = np.concatenate([e.vals[b0:b1] for (e, _), (b0, b1) in zip(parts, spans)]).astype(np.int8)
            r["offset"][j] = ro._file_inputs(cols, vals)
        return ro
