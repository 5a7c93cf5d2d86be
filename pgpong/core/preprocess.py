"""Frames to network inputs: crop, stride, binarize (the gist's `prepro`), then diff/raw/stack.

A binarized frame is a (D,) uint8 vector of 0/1; an input is kept sparse as the indices of
its non-zero entries and their values in {-1, +1}, since only a few dozen of D are non-zero.
On grayscale frames a diff input is read off the 8-byte words of the crop's rows that changed
(`frame_words`, `diff_rows`): the same numbers in a few small numpy calls instead of binarizing
every pixel of every frame.
"""
from typing import NamedTuple

import numpy as np

FRAME_HEIGHT, FRAME_WIDTH = 210, 160
BACKGROUND_RED = (144, 109)   # the two background colours' red channel
# ALE's grayscale is round(0.2989 r + 0.587 g + 0.114 b) of the NTSC palette colour. Pong draws
# nine colours: in play 0x904811 (red 144, gray 87: the background), 0xd5824a, 0x5cba5c, 0xececec
# and 0x000000; on the first frame of every episode (after a reset) 0x6d762b (red 109, gray 107:
# the gist's second background), 0x355f18, 0x656fe4, 0xd2b656. Their nine grays are distinct, and
# gray is 87 or 107 exactly for red 144 or 109, so on Pong's frames `gray not in (87, 107)` is the
# gist's channel-0 rule (tests/test_preprocess_frames.py records the colours of ~1,500 real
# frames of two games, reset frames included, and checks it). It is not a rule for any palette: gray 107 is
# also three other colours that Pong never draws.
BACKGROUND_GRAY = (87, 107)


def crop_shape(crop) -> tuple[int, int]:
    """(rows, cols) kept by the crop."""
    rows = len(range(crop.top, crop.bottom, crop.stride))
    cols = len(range(crop.left, crop.right, crop.stride))
    return rows, cols


def frame_size(crop) -> int:
    """Pixels in one binarized frame."""
    rows, cols = crop_shape(crop)
    return rows * cols


def input_size(crop, kind: str) -> int:
    """D, the network's input width: one frame, or two for `stack`."""
    return frame_size(crop) * (2 if kind == "stack" else 1)


def binarize(frame: np.ndarray, crop) -> np.ndarray:
    """(210, 160, 3) uint8 RGB frame -> (rows*cols,) uint8 in {0, 1}: background 0, rest 1."""
    red = frame[crop.top:crop.bottom:crop.stride, crop.left:crop.right:crop.stride, 0]
    return ((red != BACKGROUND_RED[0]) & (red != BACKGROUND_RED[1])).astype(np.uint8).ravel()


def crop_window(crop) -> tuple[slice, slice]:
    """(row slice, column slice) of the crop: the window `binarize_batch` cuts."""
    return slice(crop.top, crop.bottom, crop.stride), slice(crop.left, crop.right, crop.stride)


def binarize_batch(frames, window: tuple[slice, slice]) -> np.ndarray:
    """(N, 210, 160, 3) RGB or (N, 210, 160) ALE-grayscale uint8 frames -> (N, rows*cols) uint8 in {0, 1}.

    window: `crop_window(crop)`. RGB uses the gist's channel-0 rule (`binarize`); grayscale its
    equivalent on Pong's colours (see BACKGROUND_GRAY).
    """
    frames = np.asarray(frames)
    rows, cols = window
    if frames.ndim == 4:
        red = frames[:, rows, cols, 0]
        fg = ((red != BACKGROUND_RED[0]) & (red != BACKGROUND_RED[1])).view(np.uint8)
    else:
        window = frames[:, rows, cols]
        fg = ((window != BACKGROUND_GRAY[0]) & (window != BACKGROUND_GRAY[1])).view(np.uint8)
    return fg.reshape(len(frames), -1)


class GrayWords(NamedTuple):
    """Where the crop's pixels of N grayscale frames sit in 8-byte words of their rows (`gray_words`)."""
    rows: slice           # the crop's rows
    words: slice          # the words of a row that hold the crop's columns
    cols: slice           # the crop's columns among the bytes of those words
    shape: tuple          # (N, rows, words)
    pos: np.ndarray       # (N * rows * words, 8) int32: each byte's flat index in the (N, F) binarized frames, -1 off the crop
    bounds: np.ndarray    # (N + 1,) int32: i * F, where env i's pixels start


def gray_words(window: tuple[slice, slice], n: int, height: int = FRAME_HEIGHT,
               width: int = FRAME_WIDTH) -> GrayWords | None:
    """The layout of `crop_window(crop)` in the words of n (height, width) grayscale frames; None
    when a row is not whole words."""
    rows, cols = window
    left, right, stride = cols.indices(width)
    if width % 8 or stride < 1:
        return None
    words = slice(left // 8, -(-right // 8))
    byte_col = np.arange(8 * words.start, 8 * words.stop)                     # (8 * words,)
    on = (byte_col >= left) & (byte_col < right) & ((byte_col - left) % stride == 0)
    n_rows, n_cols = len(range(*rows.indices(height))), len(range(left, right, stride))
    pos = np.where(on, np.arange(n * n_rows)[:, None] * n_cols + (byte_col - left) // stride, -1)
    return GrayWords(rows, words, slice(left - 8 * words.start, right - 8 * words.start, stride),
                     (n, n_rows, words.stop - words.start), pos.astype(np.int32).reshape(-1, 8),
                     (np.arange(n + 1) * (n_rows * n_cols)).astype(np.int32))


def frame_words(frames: np.ndarray, gw: GrayWords, out: np.ndarray | None = None) -> np.ndarray:
    """(N, height, width) uint8 grayscale frames -> (N * rows * words,) uint64: the words of the crop's rows (one copy)."""
    if out is None:
        out = np.empty(len(gw.pos), np.uint64)
    np.copyto(out.reshape(gw.shape), frames.view(np.uint64)[:, gw.rows, gw.words])
    return out


def words_binarized(words: np.ndarray, gw: GrayWords) -> np.ndarray:
    """(N, F) uint8 in {0, 1}: `binarize_batch` of the frames `frame_words` was given."""
    n, r, w = gw.shape
    return binarize_batch(words.view(np.uint8).reshape(n, r, 8 * w), (slice(None), gw.cols))


_FOREGROUND = np.ones(256, np.int8)           # gray value -> its binarized pixel, as `binarize_batch`
_FOREGROUND[list(BACKGROUND_GRAY)] = 0


def diff_rows(new: np.ndarray, old: np.ndarray, has_prev: np.ndarray | None, gw: GrayWords):
    """`sparse_rows(batch_input(cur, prev, has_prev, "diff"))` from the `frame_words` of the frames
    behind cur (new) and prev (old); has_prev None: every env has a prev.

    Compares whole words (a few dozen pixels of a frame change per step), then binarizes only
    the bytes of the words that changed.
    """
    w = np.not_equal(new, old).nonzero()[0]                            # (K,) words that changed
    x = _FOREGROUND.take(new.take(w).view(np.uint8)) - _FOREGROUND.take(old.take(w).view(np.uint8))   # (8K,)
    pos = gw.pos.take(w, axis=0).reshape(-1)                           # (8K,) ascending, -1 off the crop
    nz = (x != 0) & (pos >= 0)
    if has_prev is not None:
        nz &= has_prev.take(np.searchsorted(gw.bounds, pos, side="right") - 1)
    pos = pos[nz]
    return np.searchsorted(pos, gw.bounds), pos % gw.bounds[1], x[nz]


def batch_input(cur: np.ndarray, prev: np.ndarray, has_prev: np.ndarray, kind: str) -> np.ndarray:
    """(N, D) int8 network inputs of N envs from binarized frames (N, F); `sparse_input` for all at once.

    has_prev: (N,) False on an env's first step of an episode (its prev row is then ignored).
    """
    if kind == "diff":
        x = cur.view(np.int8) - prev.view(np.int8)
        x[~has_prev] = 0
        return x
    if kind == "raw":
        return cur.view(np.int8)
    if kind == "stack":
        return np.concatenate([cur, prev * has_prev[:, None].view(np.uint8)], axis=1).view(np.int8)
    raise ValueError(f"unknown input kind {kind!r}")


def sparse_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zeros of an (N, D) int8 input matrix in CSR form: indptr (N+1,), cols (K,) int32, vals (K,) int8.

    Scans 8 bytes at a time (inputs are ~99% zeros), then the bytes of the non-zero words.
    """
    n, D = x.shape
    flat = x.reshape(-1)
    if flat.size % 8 == 0 and flat.flags.c_contiguous:
        words = np.flatnonzero(flat.view(np.uint64))
        cand = (words[:, None] * 8 + np.arange(8)).ravel()
        nz = cand[flat[cand] != 0]
    else:
        nz = np.flatnonzero(flat)
    rows, cols = np.divmod(nz, D)
    indptr = np.searchsorted(rows, np.arange(n + 1))
    return indptr, cols.astype(np.int32), flat[nz]


def sparse_input(cur: np.ndarray, prev: np.ndarray | None, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero (indices, values) of the network input built from binarized frames.

    diff: cur - prev, all zero on an episode's first step (prev is None), as in the gist;
    raw: cur; stack: [cur, prev] concatenated (prev all zero on the first step).
    """
    if kind == "diff":
        if prev is None:
            return np.empty(0, np.int32), np.empty(0, np.int8)
        x = cur.astype(np.int8) - prev.astype(np.int8)
        idx = np.flatnonzero(x).astype(np.int32)
        return idx, x[idx]
    idx = np.flatnonzero(cur).astype(np.int32)
    if kind == "raw":
        return idx, np.ones(idx.size, np.int8)
    if kind == "stack":
        prev_idx = np.empty(0, np.int32) if prev is None else np.flatnonzero(prev).astype(np.int32) + cur.size
        idx = np.concatenate([idx, prev_idx])
        return idx, np.ones(idx.size, np.int8)
    raise ValueError(f"unknown input kind {kind!r}")


def dense_input(idx: np.ndarray, val: np.ndarray, D: int, dtype=np.float64) -> np.ndarray:
    """The (D,) dense vector of a sparse input (for references and tests)."""
    x = np.zeros(D, dtype)
    x[idx] = val
    return x
