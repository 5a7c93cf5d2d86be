"""Model and checkpoint files: .npz only (never pickle), written atomically.

A file holds named arrays plus a `meta` entry: a JSON string (config, counters) stored as a
0-d unicode array, so `np.load(..., allow_pickle=False)` reads everything.
"""
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pgpong.errors import PgpongError

META = "__meta__"


def save(path, arrays: dict, meta: dict) -> Path:
    """Write arrays + meta to a temp file in the same folder, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{META: np.asarray(json.dumps(meta))}, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path) -> tuple[dict, dict]:
    """(arrays, meta) from a file written by `save`; a clear PgpongError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise PgpongError(f"{path}: no such model/checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise PgpongError(f"{path}: not a readable .npz model/checkpoint ({e})") from None
    if META not in arrays:
        raise PgpongError(f"{path}: no pgpong metadata in this .npz")
    try:
        meta = json.loads(str(arrays.pop(META)))
    except json.JSONDecodeError as e:
        raise PgpongError(f"{path}: corrupt metadata ({e})") from None
    return arrays, meta
