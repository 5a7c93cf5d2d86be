"""Command-line arguments as `key=value` (Hydra style) or `--key value` / `--key=value`.

For the small entry points that read results back (report, play): they need no config
composition, only a handful of typed keys, and the same one-line errors as the training app.
"""
import sys

from pgpong.errors import PgpongError

TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse(argv: list[str], keys: tuple[str, ...], repeatable: tuple[str, ...] = (), usage: str = "") -> dict:
    """{key: value} from argv; repeatable keys collect lists; -h/--help prints usage and exits 0."""
    out: dict = {k: [] for k in repeatable}
    args = list(argv)
    while args:
        a = args.pop(0)
        if a in ("-h", "--help"):
            print(usage.strip())
            sys.exit(0)
        if a.startswith("--"):
            key, eq, value = a[2:].partition("=")
            if not eq:
                if not args:
                    raise PgpongError(f"--{key}: needs a value")
                value = args.pop(0)
        else:
            key, eq, value = a.partition("=")
            if not eq:
                raise PgpongError(f"{a}: expected key=value (keys: {', '.join(keys)})")
        key = key.replace("-", "_") if key.replace("-", "_") in keys else key
        if key not in keys:
            raise PgpongError(f"{key}: unknown argument; use one of {', '.join(keys)}")
        if key in repeatable:
            out[key].append(value)
        else:
            out[key] = value
    return out


def as_bool(key: str, value) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise PgpongError(f"{key}={value}: must be true or false")


def as_int(key: str, value, minimum: int | None = None) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise PgpongError(f"{key}={value}: must be an integer") from None
    if minimum is not None and n < minimum:
        raise PgpongError(f"{key}={value}: must be >= {minimum}")
    return n


def as_list(value) -> list[str]:
    """`a,b,c` or `[a,b,c]` (quotes and spaces allowed) -> ['a', 'b', 'c']."""
    v = str(value).strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    return [s.strip().strip("'\"") for s in v.split(",") if s.strip().strip("'\"")]
