"""The training command's line checked before Hydra starts: a bad override is one plain line.

Hydra reports a bad override in several lines that suggest `+key=` even for typed keys. Before
the app starts, `precheck` reads the command line with Hydra's own argument parser (so every
Hydra flag, e.g. `--cfg job`, `-c job`, `--config-dir DIR`, keeps its meaning), composes the
config exactly as Hydra will (every value of a sweep too, with the user's config folders) and
validates it, so any mistake stops with `error: <key>...: <what is allowed>`, exit 2, before a
run, a file or an MLflow record exists.
"""
import sys

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from pgpong.errors import PgpongError, say_error
from pgpong.launch import compose, first_line, huge_number


def expand(args: list[str]) -> list[list[str]]:
    """The override lists to check: every value of every sweep appears in at least one."""
    parsed = OverridesParser.create().parse_overrides(args)
    base, sweeps = [], []
    for o in parsed:
        if o.is_sweep_override():
            sweeps.append((o.get_key_element(), list(o.sweep_string_iterator())))
        else:
            base.append(o.input_line)
    first = [f"{k}={vals[0]}" for k, vals in sweeps if vals]
    lists = [base + first]
    for i, (k, vals) in enumerate(sweeps):
        for v in vals[1:]:
            lists.append(base + first[:i] + [f"{k}={v}"] + first[i + 1:])
    return lists


def user_config_dirs(args) -> list[str]:
    """The user's config folders: --config-dir and hydra.searchpath=[file://...] overrides."""
    dirs = [args.config_dir] if args.config_dir else []
    for o in args.overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~") == "hydra.searchpath":
            entries = [d.strip().strip("'\"") for d in value.strip("[]").split(",")]
            dirs += [d.removeprefix("file://") for d in entries if d and (d.startswith("file://") or "://" not in d)]
    return dirs


def precheck(argv: list[str]) -> None:
    """Exit 2 with one line if any flag, override (or sweep value) is wrong; return if all are fine."""
    parser = get_args_parser()
    parser.error = bad_flag          # argparse would print its whole usage before the one line
    try:
        args = parser.parse_args(argv)
        if args.help or args.hydra_help or args.shell_completion:
            return
        user = [o for o in args.overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        config_dirs = user_config_dirs(args)
        for overrides in expand(user):
            compose(overrides, config_dirs)
    except PgpongError as e:
        sys.exit(say_error(e))
    except HydraException as e:    # override syntax
        sys.exit(say_error(first_line(e)))
    except ValueError as e:        # Python reads no integer of over 4,300 digits
        sys.exit(say_error(f"{huge_number(argv) or ' '.join(argv)}: {first_line(e)}"))


def bad_flag(message: str):
    """argparse's error handler: one line (`python -m pgpong.run --help` shows the usage)."""
    raise PgpongError(f"{message} (flags: python -m pgpong.run --hydra-help)")
