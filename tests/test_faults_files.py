"""Files are data, never code: crafted model and checkpoint files, corrupt newest checkpoints and a
full or read-only checkpoint folder, each through the real command (`pgpong.play`, `pgpong.run`).

Every command runs in a folder holding an `evil_mod.py` that leaves a marker file when imported:
gymnasium imports the module named before `:` in an env id, so a file saying
`env.id: evil_mod:Foo-v0` must be refused before any env is made.
"""
import contextlib
import hashlib
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from pgpong.launch import read_checkpoint
from tests.conftest import run_cli

MARKER = "evil_mod_was_imported"
EVIL = "evil_mod:Foo-v0"
# the gymnasium path: its checkpoints also hold emulator states, frames, actions sent, episodes in flight
RUN = ["batch_size=1", "H=8", "env.max_episode_steps=200", "checkpoint_every=1", "env.vector=false",
       "env.num_envs=1", "tracking=none"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A real 3-episode run: its model.npz and its checkpoints (episodes 1, 2, 3), oldest first."""
    root = tmp_path_factory.mktemp("made")
    r = run_cli([*RUN, "episodes=3", "hydra.run.dir=run"], cwd=root)
    assert r.returncode == 0, r.stderr
    ckpts = sorted((root / "run" / "checkpoints").glob("ckpt-*.npz"))
    assert len(ckpts) == 3
    return {"model": root / "run" / "model.npz", "ckpts": ckpts}


@pytest.fixture
def cwd(tmp_path):
    """A launch folder with a module that says when it is imported."""
    (tmp_path / "evil_mod.py").write_text(f"open({MARKER!r}, 'w').write('imported')\n")
    return tmp_path


def craft(src, dst, config=None, meta=None, arrays=None, drop=()):
    """dst: src's arrays and metadata with changes, in the real format (np.savez + a JSON `__meta__`)."""
    with np.load(src, allow_pickle=False) as f:
        data = dict(f)
    m = json.loads(str(data.pop("__meta__")))
    for dotted, value in (config or {}).items():
        node, *parents, leaf = [m["config"], *dotted.split(".")]
        for part in parents:
            node = node[part]
        node[leaf] = value
    m.update(meta or {})
    data.update(arrays or {})
    for name in drop:
        data.pop(name)
    np.savez(dst, __meta__=np.asarray(json.dumps(m)), **data)
    return dst


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(r, cwd, *fragments):
    """Exit 2, stderr one `error:` line holding every fragment, no traceback, nothing imported."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert not (cwd / MARKER).exists()


def nan_at(a, where=(0,)):
    a = a.copy()
    a[where] = np.nan
    return a


def own_weights(made, name: str, change: str) -> np.ndarray:
    """The made model's array `name`, with one NaN ("nan") or as another dtype (e.g. "float64")."""
    with np.load(made["model"]) as f:
        a = f[name]
    return nan_at(a) if change == "nan" else a.astype(change)


MODEL_CASES = {   # id: (craft keyword arguments, what the error line says)
    "env id imports a module": (dict(config={"env.id": EVIL}), f"env.id={EVIL}: not an ALE game"),
    "env id of another suite": (dict(config={"env.id": "CartPole-v1"}), "env.id=CartPole-v1: not an ALE game"),
    "crop stride 0": (dict(config={"crop.stride": 0}), "crop.stride=0: must be >= 1"),
    "nan weights": (dict(arrays={"W1": "nan"}), "W1 holds NaN or inf"),
    "wrong shape": (dict(arrays={"W2": np.zeros(9, np.float32)}), "W2 has shape (9,) but this config needs (8,)"),
    "wrong dtype": (dict(arrays={"W1": "float64"}), "W1 has dtype float64 but this config needs float32"),
    "unexpected array": (dict(arrays={"payload": np.zeros(3)}), "unexpected array 'payload'"),
    "missing array": (dict(drop=["W2"]), "model has no array 'W2'"),
    "unexpected metadata key": (dict(meta={"hook": "x"}), "unexpected metadata key 'hook'"),
    "unknown config key": (dict(config={"payload": 1}), "payload: unknown key"),
    "mistyped config value": (dict(config={"H": "eight"}), "H: Value 'eight' of type 'str' could not be converted"),
    "interpolation": (dict(config={"tracking.uri": "${oc.env:HOME}"}), "tracking.uri=${oc.env:HOME}: interpolations"),
    "negative episode": (dict(meta={"episode": -1}), "episode=-1: must be an integer >= 0"),
    "a checkpoint given as a model": (dict(meta={"kind": "checkpoint"}), "a 'checkpoint' file, not a model"),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_play_refuses_a_crafted_model_with_one_line_naming_the_field(made, cwd, case):
    kwargs, message = MODEL_CASES[case]
    arrays = {k: own_weights(made, k, v) if isinstance(v, str) else v for k, v in kwargs.get("arrays", {}).items()}
    path = craft(made["model"], cwd / "crafted.npz", **{**kwargs, "arrays": arrays})
    before = digest(path)
    r = run_cli([f"model={path}", "episodes=1"], cwd=cwd, module="pgpong.play", timeout=120)
    assert_refused(r, cwd, f"error: {path}: ", message)
    assert digest(path) == before


def ckpt_cases(made):
    """id -> (crafted checkpoint, what the error line says); crafted from the newest real checkpoint."""
    src = made["ckpts"][-1]
    with np.load(src) as f:
        opt, ale = f["opt.cache.W1"], f["env0.ale"]
        meta = json.loads(str(f["__meta__"]))
    return {
        "env id imports a module": ({"config": {"env.id": EVIL}}, f"env.id={EVIL}: not an ALE game"),
        "nan optimizer memory": ({"arrays": {"opt.cache.W1": nan_at(opt, (1, 2))}}, "opt.cache.W1 holds NaN or inf"),
        "mistyped counter": ({"meta": {"steps": "many"}}, "steps='many': must be an integer >= 0"),
        "nan running reward": ({"meta": {"running": float("nan")}}, "running=nan: must be a finite number"),
        "garbage generator state": ({"meta": {"rng": {"bit_generator": "PCG64", "state": "x"}}},
                                    "rng: not a random generator state"),
        "mistyped env state": ({"meta": {"envs": [{**meta["envs"][0], "elapsed_steps": "x"}]}},
                               "envs.0.elapsed_steps='x': must be an integer >= 0 or null"),
        "action out of range": ({"arrays": {"group0.actions": np.array([99])}},
                                "group0.actions holds actions outside"),
        "unexpected array": ({"arrays": {"env7.ale": ale}}, "unexpected array 'env7.ale'"),
        "garbage emulator bytes": ({"arrays": {"env0.ale": np.full(64, 7, np.uint8)}},
                                   "env0.ale: not a saved emulator state"),
        "unknown config key": ({"config": {"optim.beta1": 0.9}}, "optim.beta1: unknown key"),
    }


CKPT_CASE_IDS = ["env id imports a module", "nan optimizer memory", "mistyped counter", "nan running reward",
                 "garbage generator state", "mistyped env state", "action out of range", "unexpected array",
                 "garbage emulator bytes", "unknown config key"]


@pytest.mark.parametrize("case", CKPT_CASE_IDS)
def test_resume_refuses_a_crafted_checkpoint_with_one_line_naming_the_field(made, cwd, case):
    kwargs, message = ckpt_cases(made)[case]
    path = craft(made["ckpts"][-1], cwd / "ckpt-e00000009-s000000009999.npz", **kwargs)
    before = digest(path)
    r = run_cli([f"resume={path}", "tracking=none"], cwd=cwd, timeout=120)
    assert_refused(r, cwd, f"error: {path}: ", message)
    assert digest(path) == before


def test_an_env_id_on_the_command_line_is_refused_before_anything_is_imported(cwd):
    r = run_cli([f"env.id={EVIL}", "env.vector=false", "tracking=none"], cwd=cwd, timeout=120)
    assert_refused(r, cwd, f"error: env.id={EVIL}: not an ALE game")
    assert not (cwd / "outputs").exists()


def corrupt_newer(made, folder):
    """Five checkpoints newer than the real ones, each bad in its own way: name -> why it is bad."""
    newest = made["ckpts"][-1]
    data = newest.read_bytes()
    bad = {"ckpt-e00000011-s000000099999.npz": "not a readable .npz",          # cut in half
           "ckpt-e00000012-s000000099999.npz": "truncated or corrupt",         # garbage in the middle
           "ckpt-e00000013-s000000099999.npz": "not a .npz",                   # garbage throughout
           "ckpt-e00000014-s000000099999.npz": "param.W1 holds NaN",
           "ckpt-e00000015-s000000099999.npz": f"env.id={EVIL}: not an ALE game"}
    names = list(bad)
    (folder / names[0]).write_bytes(data[:len(data) // 2])
    mid = len(data) // 2
    (folder / names[1]).write_bytes(data[:mid] + bytes(1000) + data[mid + 1000:])
    (folder / names[2]).write_bytes(np.random.default_rng(0).bytes(len(data)))
    with np.load(newest) as f:
        craft(newest, folder / names[3], arrays={"param.W1": nan_at(f["param.W1"])})
    craft(newest, folder / names[4], config={"env.id": EVIL})
    return bad


def test_resume_skips_corrupt_newest_checkpoints_and_continues_from_the_newest_valid_one(made, cwd):
    folder = cwd / "ckpts"
    folder.mkdir()
    good = shutil.copy(made["ckpts"][0], folder)                     # episode 1
    bad = corrupt_newer(made, folder)
    before = {p.name: digest(p) for p in folder.iterdir()}
    r = run_cli([f"resume={folder}", "episodes=2"], cwd=cwd, timeout=180)
    assert r.returncode == 0, r.stderr
    skipped = [line for line in r.stderr.splitlines() if line.startswith("pgpong: skipped a bad checkpoint: ")]
    assert len(skipped) == len(bad)
    for line, (name, why) in zip(skipped, sorted(bad.items(), reverse=True)):   # newest first
        assert f"{folder / name}: " in line and why in line, line
    assert f"resumed from {good} at episode 1" in r.stderr and "pgpong: 2 episodes" in r.stderr
    assert "Traceback" not in r.stderr and not (cwd / MARKER).exists()
    assert {p.name: digest(p) for p in folder.iterdir()} == before


def test_resume_with_no_valid_checkpoint_is_one_line(made, cwd):
    folder = cwd / "ckpts"
    folder.mkdir()
    bad = corrupt_newer(made, folder)
    r = run_cli([f"resume={folder}", "tracking=none"], cwd=cwd, timeout=120)
    newest = sorted(bad)[-1]
    assert_refused(r, cwd, f"error: {folder}: none of its 5 checkpoints is valid; the newest: {folder / newest}: ",
                   bad[newest])
    assert sorted(p.name for p in folder.iterdir()) == sorted(bad)


# ---------------------------------------------------------------- faults while writing checkpoints

@contextlib.contextmanager
def tmpfs(path, options: str):
    """A real tmpfs mounted at `path` (needs root, or skips saying why)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def assert_one_line_and_files_kept(r, folder, kept: dict, reason: str):
    """Exit 2 with one `error:` line naming a checkpoint file and the reason; `kept` files untouched, no temp file."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert errors[0] == r.stderr.strip().splitlines()[-1]
    assert f"{folder}/ckpt-e" in errors[0] and reason in errors[0], errors[0]
    assert {p.name: digest(p) for p in folder.iterdir()} == kept      # no temp file, nothing changed
    for name in kept:
        read_checkpoint(folder / name)                                # every one still valid


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_checkpoints_before(made, tmp_path):
    # room for one checkpoint, not for a second beside it (the newest is replaced only once it is whole)
    size_k = -(-int(1.5 * made["ckpts"][0].stat().st_size) // 4096) * 4
    with tmpfs(tmp_path / "run" / "checkpoints", f"size={size_k}k") as folder:
        r = run_cli([*RUN, "episodes=20", "hydra.run.dir=run"], cwd=tmp_path, timeout=180)
        kept = {p.name: digest(p) for p in folder.iterdir()}
        assert list(kept) == ["ckpt-e00000001-s000000000200.npz"], kept
        assert_one_line_and_files_kept(r, folder, kept, "No space left on device")


def test_a_read_only_checkpoint_folder_is_one_line_and_keeps_its_files(made, tmp_path):
    with tmpfs(tmp_path / "run" / "checkpoints", "size=4m") as folder:
        shutil.copy(made["ckpts"][0], folder)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        kept = {p.name: digest(p) for p in folder.iterdir()}
        r = run_cli([*RUN, "episodes=20", "hydra.run.dir=run"], cwd=tmp_path, timeout=180)
        assert_one_line_and_files_kept(r, folder, kept, "Read-only file system")
