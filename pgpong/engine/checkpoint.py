"""Model and checkpoint files: .npz only (never pickle), written atomically, checked on load.

    python -m pgpong.run resume=outputs/<date>/<time>/checkpoints   # the newest checkpoint there

A file holds named arrays plus a `__meta__` entry: a JSON string (config, counters, random
generator states) stored as a 0-d unicode array, so `np.load(..., allow_pickle=False)` reads
everything. Writes are atomic (pgpong/files.py): a kill at any moment leaves either the old file
or the new one, never half of one.
Training checkpoints are `checkpoints/ckpt-e<episode>-s<steps>.npz`; the newest K are kept.
"""
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from pgpong.errors import PgpongError
from pgpong.files import TMP_SUFFIX, atomic_path

META = "__meta__"
CKPT_RE = re.compile(r"^ckpt-e(\d+)-s(\d+)\.npz$")


def save(path, arrays: dict, meta: dict) -> Path:
    """Write arrays + meta atomically to `path` (see pgpong/files.py).

    A write that fails (disk full, read-only or unwritable folder) is a PgpongError naming the
    file; the files written before are untouched and no temp file is left.
    """
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{META: np.asarray(json.dumps(meta))}, **arrays)
    except OSError as e:
        raise PgpongError(f"{path}: cannot write it ({e.strerror or e}); "
                          f"the files written before it are kept") from None
    return Path(path)


def load(path) -> tuple[dict, dict]:
    """(arrays, meta) from a file written by `save`; a clear PgpongError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise PgpongError(f"{path}: no such model/checkpoint file")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as e:
        # np.load falls back to unpickling for files that are neither .npy nor .npz: refused here
        raise PgpongError(f"{path}: not a .npz model/checkpoint (numpy says: {e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise PgpongError(f"{path}: not a readable .npz model/checkpoint ({e})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise PgpongError(f"{path}: a single .npy array, not a .npz model/checkpoint")
    arrays = {}
    with data:
        for k in data.files:
            try:
                arrays[k] = data[k]
            except ValueError as e:
                if "allow_pickle" in str(e):
                    raise PgpongError(f"{path}: entry {k!r} is an object array (pickled Python objects); "
                                      f"refusing to load it") from None
                raise PgpongError(f"{path}: entry {k!r} is unreadable ({e})") from None
            except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
                raise PgpongError(f"{path}: truncated or corrupt (entry {k!r}: {e})") from None
    if META not in arrays:
        raise PgpongError(f"{path}: no pgpong metadata in this .npz")
    meta_arr = arrays.pop(META)
    if meta_arr.dtype.kind != "U" or meta_arr.ndim != 0:
        raise PgpongError(f"{path}: metadata entry is {meta_arr.dtype}{meta_arr.shape}, expected a JSON string")
    try:
        meta = json.loads(str(meta_arr))
    except json.JSONDecodeError as e:
        raise PgpongError(f"{path}: corrupt metadata ({e})") from None
    if not isinstance(meta, dict):
        raise PgpongError(f"{path}: metadata is not a JSON object")
    return arrays, meta


def expect(arrays: dict, expected: dict, path, what: str = "checkpoint") -> None:
    """Every expected (shape, dtype) present and exact, nothing missing: else say what differs."""
    for name, (shape, dtype) in expected.items():
        if name not in arrays:
            raise PgpongError(f"{path}: {what} has no array {name!r} (expected shape {tuple(shape)})")
        a = arrays[name]
        if tuple(a.shape) != tuple(shape):
            raise PgpongError(f"{path}: {name} has shape {tuple(a.shape)} but this config needs {tuple(shape)}")
        if np.dtype(a.dtype) != np.dtype(dtype):
            raise PgpongError(f"{path}: {name} has dtype {a.dtype} but this config needs {np.dtype(dtype)}")


def require_finite(arrays: dict, path, names=None) -> None:
    """Refuse NaN/inf weights: such a file comes from a diverged run."""
    for name in names or arrays:
        a = arrays[name]
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise PgpongError(f"{path}: {name} holds NaN or inf values (saved from a diverged run?)")


def check_offsets(flat: np.ndarray, offsets: np.ndarray, path, name: str) -> None:
    """Refuse offsets that do not cut `flat` into consecutive parts (a CSR matrix's indptr)."""
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != flat.size \
            or np.any(np.diff(offsets) < 0):
        raise PgpongError(f"{path}: {name} offsets do not match its {flat.size} values")


def checkpoint_path(folder, episode: int, steps: int) -> Path:
    return Path(folder) / f"ckpt-e{episode:08d}-s{steps:012d}.npz"


def list_checkpoints(folder) -> list[Path]:
    """Checkpoint files in `folder`, oldest first (by episode, then step)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CKPT_RE.match(p.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), p))
    return [p for _, p in sorted(found)]


def latest(folder) -> Path:
    """The newest checkpoint in `folder`, or a PgpongError saying there is none."""
    found = list_checkpoints(folder)
    if not found:
        raise PgpongError(f"{folder}: no checkpoint files (ckpt-e*-s*.npz) here")
    return found[-1]


def prune(folder, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints, and temp files left by killed writers."""
    found = list_checkpoints(folder)
    for p in found[:-keep] if keep > 0 else found:
        p.unlink(missing_ok=True)
    for p in Path(folder).glob(f"ckpt-*.npz.*{TMP_SUFFIX}"):   # called right after our own write completed
        p.unlink(missing_ok=True)
