"""Command-line checks shared by the entry points: overrides become one plain error line.

Hydra reports a bad override in several lines that suggest `+key=` even for typed keys. Before
the app starts, `precheck` composes the config exactly as Hydra will (every value of a sweep
too) and validates it, so any mistake stops with `error: <key>...: <what is allowed>`, exit 2,
before a run, a file or an MLflow record exists.
"""
import sys

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import BooleanNode, FloatNode, IntegerNode, OmegaConf, StringNode
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from pgpong import config
from pgpong.errors import PgpongError
from pgpong.paths import CONF_DIR

NODE_WORDS = {BooleanNode: "true or false", IntegerNode: "an integer", FloatNode: "a number", StringNode: "a string"}


def group_options(group: str) -> list[str]:
    """The choices of a config group: its YAML files under conf/<group>/."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _structure(overrides: list[str]):
    """The config composed with only the group choices among the overrides (its shape)."""
    groups = set(config_groups())
    choices = [o for o in overrides if o.partition("=")[0] in groups]
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=choices)
    except (HydraException, OmegaConfBaseException):
        return None


def _allowed_keys(parent_key: str, overrides: list[str]) -> str:
    cfg = _structure(overrides)
    node = None if cfg is None else (OmegaConf.select(cfg, parent_key) if parent_key else cfg)
    return ", ".join(str(k) for k in node.keys()) if OmegaConf.is_config(node) else "?"


def _expected(key: str, overrides: list[str]) -> str:
    cfg = _structure(overrides)
    parent, _, leaf = key.rpartition(".")
    node = None if cfg is None else (OmegaConf.select(cfg, parent) if parent else cfg)
    value_node = node._get_node(leaf) if OmegaConf.is_config(node) else None
    word = next((w for cls, w in NODE_WORDS.items() if isinstance(value_node, cls)), "a valid value")
    return word + (" or null" if value_node is not None and value_node._is_optional() else "")


def explain(e: Exception, overrides: list[str]) -> str:
    """One line naming the key and what is allowed, from a Hydra/OmegaConf composition error."""
    if isinstance(e, MissingConfigException):
        for o in overrides:
            key, _, value = o.partition("=")
            if key in config_groups() and value not in group_options(key):
                return f"{key}={value}: no such option; choose one of {', '.join(group_options(key))}"
        return str(e).splitlines()[0]
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else e
    key = getattr(cause, "full_key", None) or ""
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        parent = key.rpartition(".")[0]
        where = f"in '{parent}'" if parent else "at the top level"
        return f"{key}: unknown key; allowed {where}: {_allowed_keys(parent, overrides)}"
    if isinstance(cause, ValidationError):
        value = next((o.partition("=")[2] for o in overrides if o.partition("=")[0] == key), "?")
        return f"{key}={value}: must be {_expected(key, overrides)}"
    return str(cause).splitlines()[0]


def config_groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


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


def compose_checked(overrides: list[str]):
    """The composed, validated config, or a PgpongError with one plain line."""
    config.register()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise PgpongError(explain(e, overrides)) from None
    config.validate(cfg)
    return cfg


def precheck(argv: list[str]) -> None:
    """Exit 2 with one line if any override (or sweep value) is wrong; return if all are fine."""
    user = [a for a in argv if not a.startswith("-") and not a.startswith(("hydra.", "hydra/"))]
    try:
        for overrides in expand(user):
            compose_checked(overrides)
    except PgpongError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except HydraException as e:   # override syntax errors
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
