"""Preprocessing: the gist's crop/stride/binarize on real frames, and the input kinds."""
import numpy as np
import pytest

from pgpong.core import preprocess
from pgpong.engine.envs import make_one
from tests.conftest import compose_cfg


def real_frames(n=60, seed=0):
    cfg = compose_cfg()
    env = make_one(cfg.env)
    frame, _ = env.reset(seed=seed)
    frames = [frame]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        frame, *_ = env.step(int(rng.choice([2, 3])))
        frames.append(frame)
    env.close()
    return frames


def gist_style_reference(I):
    """The gist's prepro written out step by step on a copy."""
    I = I[35:195].copy()
    I = I[::2, ::2, 0]
    I[I == 144] = 0
    I[I == 109] = 0
    I[I != 0] = 1
    return I.astype(np.float64).ravel()


def test_binarize_equals_the_gist_on_real_frames():
    crop = compose_cfg().crop
    for frame in real_frames():
        np.testing.assert_array_equal(preprocess.binarize(frame, crop), gist_style_reference(frame))


@pytest.mark.parametrize("name,shape", [("karpathy", (80, 80)), ("fix", (75, 80))])
def test_crop_presets_shape(name, shape):
    crop = compose_cfg([f"crop={name}"]).crop
    assert preprocess.crop_shape(crop) == shape
    assert preprocess.frame_size(crop) == shape[0] * shape[1]


def test_custom_crop_shape_follows_bounds():
    crop = compose_cfg(["crop.bottom=180", "crop.left=15", "crop.right=145", "crop.stride=3"]).crop
    assert preprocess.crop_shape(crop) == (len(range(35, 180, 3)), len(range(15, 145, 3)))


def test_input_kinds_from_binary_frames():
    cur = np.array([0, 1, 1, 0, 0], np.uint8)
    prev = np.array([1, 1, 0, 0, 0], np.uint8)
    idx, val = preprocess.sparse_input(cur, prev, "diff")
    np.testing.assert_array_equal(preprocess.dense_input(idx, val, 5), cur.astype(float) - prev)
    idx, val = preprocess.sparse_input(cur, None, "diff")
    assert idx.size == 0                                  # the first step's input is zero
    idx, val = preprocess.sparse_input(cur, prev, "raw")
    np.testing.assert_array_equal(preprocess.dense_input(idx, val, 5), cur)
    idx, val = preprocess.sparse_input(cur, prev, "stack")
    np.testing.assert_array_equal(preprocess.dense_input(idx, val, 10), np.concatenate([cur, prev]))
    idx, val = preprocess.sparse_input(cur, None, "stack")
    np.testing.assert_array_equal(preprocess.dense_input(idx, val, 10), np.concatenate([cur, 0 * cur]))


def test_difference_frames_are_sparse_on_real_play():
    crop = compose_cfg().crop
    frames = [preprocess.binarize(f, crop) for f in real_frames()]
    nnz = [preprocess.sparse_input(c, p, "diff")[0].size for p, c in zip(frames, frames[1:])]
    assert max(nnz) < 200 < preprocess.frame_size(crop)
