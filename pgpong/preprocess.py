"""Frames to network inputs: crop, stride, binarize (the gist's `prepro`), then diff/raw/stack.

A binarized frame is a (D,) uint8 vector of 0/1; an input is kept sparse as the indices of
its non-zero entries and their values in {-1, +1}, since only a few dozen of D are non-zero.
"""
import numpy as np

FRAME_HEIGHT, FRAME_WIDTH = 210, 160
BACKGROUND_RED = (144, 109)   # the two background colours' red channel


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
