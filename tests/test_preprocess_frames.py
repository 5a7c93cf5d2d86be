"""Preprocessing on recorded real frames: the fast path's grayscale rule is the gist's RGB rule."""
import numpy as np
import pytest
from ale_py import ALEInterface, LoggerMode, roms

from pgpong.core import policy
from pgpong.core.preprocess import (
    BACKGROUND_GRAY,
    BACKGROUND_RED,
    batch_input,
    binarize,
    binarize_batch,
    crop_window,
    diff_rows,
    frame_words,
    gray_words,
    sparse_input,
    sparse_rows,
    words_binarized,
)
from pgpong.engine.rollout import Rollout
from tests.conftest import compose_cfg

# in play, and on every episode's first (reset) frame: see pgpong/core/preprocess.py
PLAY_COLOURS = {0x904811, 0xD5824A, 0x5CBA5C, 0xECECEC, 0x000000}
RESET_COLOURS = {0x6D762B, 0x355F18, 0x656FE4, 0xD2B656, 0x000000}


def record_real_frames(seed: int, frames: int, every: int = 8):
    """(rgb (M, 210, 160, 3), gray (M, 210, 160), palette index (M, 210, 160)) of real Pong states:
    a ball-tracking player that wins and loses points, with random moves, sticky actions; all
    three screens of each state; every reset frame is kept."""
    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.setInt("random_seed", seed)
    ale.setFloat("repeat_action_probability", 0.25)
    ale.loadROM(roms.get_rom_path("pong"))
    rng = np.random.default_rng(seed)
    rgbs, grays, index = [], [], []
    fresh = True
    for t in range(frames):
        if ale.game_over():
            ale.reset_game()
            fresh = True
        rgb = ale.getScreenRGB()
        if t % every == 0 or fresh:
            rgbs.append(rgb)
            grays.append(ale.getScreenGrayscale())
            index.append(ale.getScreen())
        fresh = False
        red = rgb[34:194, :, 0]
        ball = np.argwhere(red[:, 20:140] == 236)            # the ball between the paddles
        ours = np.argwhere(red[:, 140:144] == 92)            # our paddle
        if len(ball) and len(ours) and rng.random() < 0.8:
            action = 2 if ours[:, 0].mean() > ball[:, 0].mean() else 3   # UP / DOWN toward the ball
        else:
            action = int(rng.choice([0, 2, 3]))
        ale.act(action)
    return np.array(rgbs), np.array(grays), np.array(index)


@pytest.fixture(scope="module")
def recorded():
    parts = [record_real_frames(seed, 6000) for seed in (1, 2)]
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


@pytest.fixture(scope="module")
def real_frames(recorded):
    return recorded[0], recorded[1]


def test_pong_colours_are_told_apart_by_gray_exactly_as_by_the_gist_rule(recorded):
    rgb, gray, index = recorded
    used = np.flatnonzero(np.bincount(index.ravel(), minlength=256))         # palette entries drawn
    flat_index, flat_rgb, flat_gray = index.ravel(), rgb.reshape(-1, 3), gray.ravel()
    first = np.array([np.argmax(flat_index == k) for k in used])              # a pixel of each entry
    lut_rgb = np.zeros((256, 3), np.uint8)
    lut_gray = np.zeros(256, np.uint8)
    lut_rgb[used], lut_gray[used] = flat_rgb[first], flat_gray[first]
    np.testing.assert_array_equal(lut_gray[index], gray)                      # one colour per entry
    np.testing.assert_array_equal(lut_rgb[index], rgb)
    colours = {int.from_bytes(lut_rgb[k].tobytes(), "big"): int(lut_gray[k]) for k in used}
    assert set(colours) == PLAY_COLOURS | RESET_COLOURS
    assert len(set(colours.values())) == len(colours)                         # nine distinct grays
    for colour, g in colours.items():
        assert (g in BACKGROUND_GRAY) == ((colour >> 16) in BACKGROUND_RED), hex(colour)


def test_every_episode_starts_on_the_second_background(recorded):
    rgb, _, _ = recorded
    reset = rgb[:, 100, 80, 0] == 109
    assert reset.sum() >= 3                                                   # several games recorded
    assert reset.sum() < 0.05 * len(rgb)


def test_real_games_reach_many_states(real_frames):
    rgb, _ = real_frames
    # the score area changes (points are won and lost), and the states differ (between points the
    # screen stands still for a while, so not every recorded frame is new)
    assert len({r[:20].tobytes() for r in rgb}) >= 10
    assert len({r.tobytes() for r in rgb}) >= 300


@pytest.mark.parametrize("crop", ["karpathy", "fix"])
def test_binarized_grayscale_equals_gist_rule_on_rgb(real_frames, crop):
    rgb, gray = real_frames
    cfg = compose_cfg([f"crop={crop}"])
    window = crop_window(cfg.crop)
    from_gray = binarize_batch(gray, window)
    from_rgb = binarize_batch(rgb, window)
    one_by_one = np.stack([binarize(f, cfg.crop) for f in rgb])      # the gist's rule, frame by frame
    np.testing.assert_array_equal(from_rgb, one_by_one)
    np.testing.assert_array_equal(from_gray, one_by_one)
    assert one_by_one.any(axis=1).all()                              # never an empty frame


@pytest.mark.parametrize("kind", ["diff", "raw", "stack"])
def test_batch_input_equals_sparse_input_per_env(real_frames, kind):
    rgb, _ = real_frames
    cfg = compose_cfg()
    b = binarize_batch(rgb[:41], crop_window(cfg.crop))
    cur, prev = b[1:], b[:-1]
    has_prev = np.arange(len(cur)) % 4 != 0                           # some envs on their first step
    indptr, cols, vals = sparse_rows(batch_input(cur, prev, has_prev, kind))
    for i in range(len(cur)):
        idx, val = sparse_input(cur[i], prev[i] if has_prev[i] else None, kind)
        np.testing.assert_array_equal(cols[indptr[i]:indptr[i + 1]], idx)
        np.testing.assert_array_equal(vals[indptr[i]:indptr[i + 1]], val)


CROPS = [[], ["crop=fix"], ["crop.top=30", "crop.bottom=201", "crop.left=3", "crop.right=157", "crop.stride=3"]]


@pytest.mark.parametrize("crop", CROPS, ids=["karpathy", "fix", "odd"])
def test_diff_read_off_changed_words_equals_diff_of_binarized_frames(real_frames, crop):
    _, gray = real_frames
    window = crop_window(compose_cfg(crop).crop)
    cur, prev = gray[1:41], gray[:40]                                  # 40 envs, consecutive states
    gw = gray_words(window, len(cur))
    new, old = frame_words(cur, gw), frame_words(prev, gw)
    np.testing.assert_array_equal(words_binarized(new, gw), binarize_batch(cur, window))
    for has_prev in (np.ones(len(cur), bool), np.arange(len(cur)) % 3 != 0):
        want = sparse_rows(batch_input(binarize_batch(cur, window), binarize_batch(prev, window), has_prev, "diff"))
        got = diff_rows(new, old, None if has_prev.all() else has_prev, gw)
        assert len(want[1]) > 100                                      # the frames do differ
        for w, g in zip(want, got):
            assert w.dtype == g.dtype
            np.testing.assert_array_equal(w, g)


@pytest.mark.parametrize("kind", ["diff", "stack"])
def test_rollout_on_grayscale_frames_acts_and_records_as_on_rgb_frames(real_frames, kind):
    """The words path (grayscale) against the binarize-every-frame path (RGB) on the same states."""
    rgb, gray = real_frames
    cfg = compose_cfg()
    window, n, steps = crop_window(cfg.crop), 4, 60
    params = policy.init_params(np.random.default_rng(0), 6400 * (2 if kind == "stack" else 1), 8, "two",
                                False, np.float32)
    dones = np.random.default_rng(1).random((steps, n)) < 0.05
    runs = []
    for frames in (gray, rgb):
        rng = np.random.default_rng(2)
        ro = Rollout(frames[:n], window, kind, "two", 8, np.float32)
        acts, finished = [], []
        for t in range(steps):
            acts.append(ro.act(params, rng, t))
            ro.record_acts()
            finished += ro.record_step(frames[n * (t + 1):n * (t + 2)], np.zeros(n), dones[t])
        runs.append((acts, finished, ro.in_flight(), ro.cur, ro.prev, ro.has_prev))
    (a1, f1, i1, *s1), (a2, f2, i2, *s2) = runs
    np.testing.assert_array_equal(a1, a2)
    assert [i for i, _ in f1] == [i for i, _ in f2] and len(f1) >= 5
    for e1, e2 in zip([e for _, e in f1] + i1, [e for _, e in f2] + i2):
        for x, y in zip(e1.idx + e1.val + [e1.hs, e1.p_up], e2.idx + e2.val + [e2.hs, e2.p_up]):
            np.testing.assert_array_equal(x, y)
    for x, y in zip(s1, s2):                                           # what a checkpoint saves
        np.testing.assert_array_equal(x, y)
