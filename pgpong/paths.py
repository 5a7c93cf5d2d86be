"""The one place for paths: where the configs and sweep specs live, and user paths and URIs resolved
against the launch directory."""
from pathlib import Path

from pgpong.errors import PgpongError

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
CONF_DIR = PROJECT_DIR / "conf"        # the Hydra config tree
SWEEPS_DIR = PROJECT_DIR / "sweeps"    # the Optuna search specs


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
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(launch_dir) / p
