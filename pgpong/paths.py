"""The one place for paths: where the configs and sweep specs live, and user paths and URIs resolved
against the launch directory.

The configs (conf/) and the sweep specs (sweeps/) of the source tree are the packages
`pgpong.conf` and `pgpong.sweeps` (pyproject.toml maps them), so the wheel ships them and
they are found through the import system wherever it is installed. A source tree that is imported
without being installed uses its own conf/ and sweeps/.
"""
from importlib.util import find_spec
from pathlib import Path

from pgpong.errors import PgpongError

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_DIR = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None   # a checkout


def shipped(name: str) -> Path:
    """The folder of the data package pgpong.<name>: the checkout's own <name>/ when run from one."""
    if SOURCE_DIR is not None and (SOURCE_DIR / name).is_dir():
        return SOURCE_DIR / name
    spec = find_spec(f"pgpong.{name}")     # a folder of data files: a namespace package
    if spec is None or not spec.submodule_search_locations:
        raise PgpongError(f"pgpong.{name}: not installed with pgpong (reinstall the package)")
    return Path(next(iter(spec.submodule_search_locations)))


CONF_DIR = shipped("conf")        # the Hydra config tree
SWEEPS_DIR = shipped("sweeps")    # the Optuna search specs


def resolve_sqlite_uri(uri: str, launch_dir: str | Path, key: str) -> str:
    """sqlite:///relative.db -> sqlite:////launch_dir/relative.db; other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = Path(uri[len(prefix):])
        if not path.is_absolute():
            path = Path(launch_dir) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return prefix + str(path.resolve())
    if "://" not in uri and not uri.startswith("sqlite:"):
        raise PgpongError(f"{key}={uri}: not a URI; use sqlite:///path.db or http://host:port")
    return uri


def resolve_path(path: str | Path, launch_dir: str | Path) -> Path:
    """A user-given file path, relative to where the user launched the command."""
    try:
        p = Path(path).expanduser()
    except RuntimeError:            # ~name of no such user: the path as it was given
        p = Path(path)
    return p if p.is_absolute() else Path(launch_dir) / p
