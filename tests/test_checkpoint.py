"""Checkpoint files: atomic under SIGKILL, and refused with a clear message when bad or crafted."""
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pgpong.engine import checkpoint
from pgpong.engine.envs import make_envs
from pgpong.engine.state import (
    checkpoint_state,
    new_state,
    restore_state,
    start_rollouts,
)
from pgpong.errors import PgpongError
from tests.conftest import compose_cfg, run_cli

CFG = ["H=8", "env.max_episode_steps=60", "tracking=none", "env.vector=false"]   # the gymnasium path saves every part


@pytest.fixture
def good(tmp_path):
    """A real checkpoint (arrays, meta) of a fresh state for CFG."""
    cfg = compose_cfg(CFG)
    rng = np.random.default_rng(0)
    envs = make_envs(cfg.env, [1])
    state = new_state(cfg, rng)
    arrays, meta = checkpoint_state(cfg, state, rng, envs, start_rollouts(cfg, envs))
    envs.close()
    return cfg, arrays, meta


def restore(cfg, path):
    arrays, meta = checkpoint.load(path)
    rng = np.random.default_rng(0)
    envs = make_envs(cfg.env, [1])
    try:
        return restore_state(cfg, arrays, meta, rng, envs, path)[0]
    finally:
        envs.close()


def test_a_checkpoint_round_trips(tmp_path, good):
    cfg, arrays, meta = good
    path = checkpoint.save(tmp_path / "c.npz", arrays, meta)
    state = restore(cfg, path)
    np.testing.assert_array_equal(state.params["W1"], arrays["param.W1"])


def test_an_object_array_is_refused_without_unpickling_it(tmp_path, good):
    cfg, arrays, meta = good
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    path = tmp_path / "evil.npz"
    np.savez(path, __meta__=np.asarray("{}"), W1=np.array([Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(PgpongError, match="object array"):
        checkpoint.load(path)
    raw = tmp_path / "evil.pkl.npz"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(PgpongError, match="not a .npz"):
        checkpoint.load(raw)
    assert not marker.exists()


@pytest.mark.parametrize("name,bad,message", [
    ("param.W1", np.zeros((6400, 9), np.float32), r"param.W1 has shape \(6400, 9\) but this config needs \(6400, 8\)"),
    ("param.W2", np.zeros((1,), np.float32), r"param.W2 has shape \(1,\) but this config needs \(8,\)"),
    ("param.W1", np.zeros((6400, 8), np.float64), "param.W1 has dtype float64 but this config needs float32"),
    ("opt.cache.W2", np.zeros((8, 3), np.float32), r"opt.cache.W2 has shape \(8, 3\)"),
    ("env0.idx", np.array([99999], np.int32), r"env0.val has shape \(0,\) but this config needs \(1,\)"),
])
def test_wrong_shapes_or_dtypes_are_named_never_broadcast(tmp_path, good, name, bad, message):
    cfg, arrays, meta = good
    path = checkpoint.save(tmp_path / "c.npz", {**arrays, name: bad}, meta)
    with pytest.raises(PgpongError, match=message):
        restore(cfg, path)


def test_a_file_from_an_incompatible_config_says_what_differs(tmp_path, good):
    _, arrays, meta = good
    path = checkpoint.save(tmp_path / "c.npz", arrays, meta)
    with pytest.raises(PgpongError, match=r"param.W1 has shape \(6400, 8\) but this config needs \(6000, 8\)"):
        restore(compose_cfg(CFG + ["crop.bottom=185"]), path)
    with pytest.raises(PgpongError, match="has no array 'param.Wv'"):
        restore(compose_cfg(CFG + ["baseline=value"]), path)


def test_truncated_missing_meta_not_npz_and_npy_files_give_clear_errors(tmp_path, good):
    cfg, arrays, meta = good
    path = checkpoint.save(tmp_path / "c.npz", arrays, meta)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 10):
        (tmp_path / "t.npz").write_bytes(data[:cut])
        with pytest.raises(PgpongError, match="t.npz"):
            checkpoint.load(tmp_path / "t.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(PgpongError, match="not a .npz"):
        checkpoint.load(tmp_path / "text.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(PgpongError, match="single .npy array"):
        checkpoint.load(tmp_path / "one.npy")
    np.savez(tmp_path / "plain.npz", W1=np.zeros(3))
    with pytest.raises(PgpongError, match="no pgpong metadata"):
        checkpoint.load(tmp_path / "plain.npz")


def test_nan_weights_in_a_checkpoint_are_refused(tmp_path, good):
    cfg, arrays, meta = good
    W1 = arrays["param.W1"].copy()
    W1[3, 4] = np.nan
    path = checkpoint.save(tmp_path / "c.npz", {**arrays, "param.W1": W1}, meta)
    with pytest.raises(PgpongError, match="param.W1 holds NaN or inf"):
        restore(cfg, path)


def test_a_crafted_file_given_to_resume_is_a_one_line_error(tmp_path):
    np.savez(tmp_path / "evil.npz", W1=np.array([object()], dtype=object), allow_pickle=True)
    r = run_cli(["resume=evil.npz", "tracking=none"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "object array" in r.stderr


WRITER = """
import sys, numpy as np
from pgpong.engine import checkpoint
folder, i = sys.argv[1], 0
big = np.random.default_rng(0).standard_normal(8_000_000).astype(np.float32)   # 32 MB per file
while True:
    i += 1
    big[0] = i
    checkpoint.save(folder + "/c.npz", {"W": big}, {"i": i})
    print(i, flush=True)
"""


def test_sigkill_during_writes_leaves_the_previous_file_loadable(tmp_path):
    rng = np.random.default_rng(0)
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        written = int(proc.stdout.readline())        # at least one complete file exists
        time.sleep(rng.uniform(0.05, 0.4))           # then kill it, most likely mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        arrays, meta = checkpoint.load(tmp_path / "c.npz")
        assert meta["i"] >= written and arrays["W"][0] == meta["i"] and arrays["W"].size == 8_000_000
    leftovers = list(tmp_path.glob("c.npz.*.tmp"))
    assert all(p.stat().st_size < 40_000_000 for p in leftovers)    # partial temp files, never the target
