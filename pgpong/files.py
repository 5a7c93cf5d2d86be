"""Atomic file writes: a reader, another worker or a crash sees the old file or the new one, never half.

The bytes go to a temp file in the target's folder, are fsync'd, then renamed over the target
(os.replace is atomic within one filesystem); the folder is fsync'd so the rename itself lasts.
A write that fails, or is interrupted, leaves the target as it was and removes its temp file.
"""
import contextlib
import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temp path beside `path` to write to; on a clean exit it replaces `path`.

    `suffix` ends the temp name (e.g. ".mp4", for writers that choose a format by the name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{path.name}.", suffix=TMP_SUFFIX + suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent, os.O_RDONLY)


def remove_temps(folder, name: str = "*") -> list[Path]:
    """Delete the temp files interrupted atomic writes of `name` (a glob) left in folder; returns them.

    Only for a folder no writer is using (e.g. the output folder of a stopped run).
    """
    found = sorted(Path(folder).glob(f"{name}.{'?' * 8}{TMP_SUFFIX}*"))   # mkstemp's 8 random characters
    for p in found:
        p.unlink(missing_ok=True)
    return found


def write_atomic(path, data: str | bytes) -> Path:
    """`path` holds `data` (text is written as UTF-8), all at once."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def _fsync(target: Path, flags: int) -> None:
    try:
        fd = os.open(target, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
