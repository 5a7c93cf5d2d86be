"""How every command starts a training run: compose the config, build the envs, train.

    cfg = compose(overrides)                        the config exactly as `python -m pgpong.run` composes it
    with start(cfg, checkpoint) as begun:           seeded envs (and a checkpoint's state), closed after
        train_run(cfg, begun, tracker, out_dir)     params and config logged, train, the model logged

`python -m pgpong.run`, the sweep's trials and the benchmark start runs this way; the tracker
(MLflow or none) is the caller's, as is its run's status.
"""
import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from omegaconf import BooleanNode, FloatNode, IntegerNode, OmegaConf, StringNode
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)
from threadpoolctl import threadpool_limits

from pgpong import config
from pgpong.engine import checkpoint as ckpt_file
from pgpong.engine.envs import seeded_envs
from pgpong.engine.state import Live, TrainState, check_checkpoint, check_kind, restore_state
from pgpong.engine.trainer import train
from pgpong.errors import PgpongError
from pgpong.paths import CONF_DIR
from pgpong.tracking import naming

NODE_WORDS = {BooleanNode: "true or false", IntegerNode: "an integer", FloatNode: "a number", StringNode: "a string"}


# ---- the config --------------------------------------------------------------------------------

def config_dirs_override(config_dirs) -> list[str]:
    """The user's own config folders (Hydra's --config-dir) as a hydra.searchpath override."""
    dirs = [str(Path(d).resolve()) for d in config_dirs]
    return [f"hydra.searchpath=[{','.join('file://' + d for d in dirs)}]"] if dirs else []


def compose(overrides=(), config_dirs=(), validate: bool = True):
    """conf/ (and the user's config folders) composed with these overrides, as the Hydra app does;
    validated unless told not to. A mistake is a PgpongError with one line naming the key."""
    config.register()
    overrides = list(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=config_dirs_override(config_dirs) + overrides)
    except Exception as e:   # Hydra's own errors, and its ValueError/TypeError/AssertionError on odd group overrides
        raise PgpongError(explain(e, overrides, config_dirs)) from None
    if validate:
        config.validate(cfg)
    return cfg


def config_groups(config_dirs=()) -> list[str]:
    """The config groups: the folders of conf/ and of the user's config folders."""
    return sorted({p.name for d in (CONF_DIR, *map(Path, config_dirs)) if Path(d).is_dir()
                   for p in Path(d).iterdir() if p.is_dir() and not p.name.startswith(("_", "."))})


def group_options(group: str, config_dirs=()) -> list[str]:
    """The choices of a config group: its YAML files in conf/<group>/ and the user's <dir>/<group>/."""
    return sorted({p.stem for d in (CONF_DIR, *map(Path, config_dirs)) for p in (Path(d) / group).glob("*.yaml")})


def _structure(overrides: list[str], config_dirs):
    """The config composed with only the group choices among the overrides (its shape)."""
    groups = set(config_groups(config_dirs))
    choices = [o for o in overrides if o.lstrip("+~").partition("=")[0] in groups]
    try:
        return compose(choices, config_dirs, validate=False)
    except PgpongError:
        return None


def explain(e: Exception, overrides: list[str], config_dirs=()) -> str:
    """One line naming the key and what is allowed, from a Hydra/OmegaConf composition error."""
    if not isinstance(e, (HydraException, OmegaConfBaseException)) or isinstance(e, MissingConfigException):
        groups = config_groups(config_dirs)
        for o in overrides:
            key, _, value = o.lstrip("+~").partition("=")
            options = group_options(key, config_dirs) if key in groups else []
            if key in groups and value not in options:
                return f"{key}={value}: no such option; choose one of {', '.join(options)}"
            if not key:
                return f"{o}: no key before '='"
        return f"{huge_number(overrides) or ' '.join(overrides)}: {first_line(e)}"
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else e
    key = getattr(cause, "full_key", None) or ""
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        parent = key.rpartition(".")[0]
        where = f"in '{parent}'" if parent else "at the top level"
        return f"{key}: unknown key; allowed {where}: {_allowed_keys(parent, overrides, config_dirs)}"
    if isinstance(cause, ValidationError):
        value = next((o.partition("=")[2] for o in overrides if o.partition("=")[0] == key), "?")
        return f"{key}={value}: must be {_expected(key, overrides, config_dirs)}"
    return first_line(cause)


def huge_number(overrides: list[str]) -> str | None:
    """The key of an override whose value is a number too long for Python to read (over 4,300 digits)."""
    return next((o.partition("=")[0] for o in overrides if sum(c.isdigit() for c in o) > 4300), None)


def first_line(e: Exception) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _allowed_keys(parent_key: str, overrides: list[str], config_dirs) -> str:
    cfg = _structure(overrides, config_dirs)
    node = None if cfg is None else (OmegaConf.select(cfg, parent_key) if parent_key else cfg)
    return ", ".join(str(k) for k in node.keys()) if OmegaConf.is_config(node) else "?"


def _expected(key: str, overrides: list[str], config_dirs) -> str:
    cfg = _structure(overrides, config_dirs)
    parent, _, leaf = key.rpartition(".")
    node = None if cfg is None else (OmegaConf.select(cfg, parent) if parent else cfg)
    value_node = node._get_node(leaf) if OmegaConf.is_config(node) else None
    word = next((w for cls, w in NODE_WORDS.items() if isinstance(value_node, cls)), "a valid value")
    return word + (" or null" if value_node is not None and value_node._is_optional() else "")


# ---- checkpoints -------------------------------------------------------------------------------

def read_checkpoint(path) -> tuple[dict, dict]:
    """(arrays, meta) of a checkpoint file, all checked before use: its config against the schema
    and `config.validate`, every other field and array against that config."""
    arrays, meta = ckpt_file.load(path)
    check_kind(meta, "checkpoint", path)
    check_checkpoint(config.validate_saved(meta.get("config"), path), arrays, meta, path)
    return arrays, meta


def newest_valid_checkpoint(folder, skipped) -> tuple[dict, dict, Path]:
    """(arrays, meta, path) of the newest checkpoint in `folder` that passes read_checkpoint.

    `skipped(message)` is told why each newer file was passed over; when none is valid, one
    PgpongError says so with the newest file's fault.
    """
    found = ckpt_file.list_checkpoints(folder)
    if not found:
        raise PgpongError(f"{folder}: no checkpoint files (ckpt-e*-s*.npz) here")
    faults = []
    for path in reversed(found):
        try:
            arrays, meta = read_checkpoint(path)
        except PgpongError as e:
            faults.append(str(e))
            continue
        for fault in faults:
            skipped(f"skipped a bad checkpoint: {fault}")
        return arrays, meta, path
    raise PgpongError(f"{folder}: none of its {len(found)} checkpoints is valid; the newest: {faults[0]}")


# ---- the run -----------------------------------------------------------------------------------

@dataclass
class Start:
    """Where a run starts: its one random generator, its envs, and the state a checkpoint left (or None)."""
    rng: np.random.Generator
    envs: object
    state: TrainState | None = None
    live: Live | None = None


@contextlib.contextmanager
def start(cfg, checkpoint=None):
    """The run's seeded envs, put back where `checkpoint` ((arrays, meta, path)) left them; closed on exit."""
    rng, envs = seeded_envs(cfg)
    try:
        state, live = restore_state(cfg, checkpoint[0], checkpoint[1], rng, envs, checkpoint[2]) \
            if checkpoint else (None, None)
        yield Start(rng, envs, state, live)
    finally:
        envs.close()


def train_run(cfg, begun: Start, tracker, out_dir, *, callbacks=(), progress=None, stop=None, ckpt_meta=None,
              skip_params=frozenset()) -> dict:
    """Params and config logged (a resumed MLflow run has them), `train`, elapsed time and the model logged."""
    out_dir = Path(out_dir)
    if not getattr(tracker, "resumed", False):
        params = naming.run_params(cfg, begun.envs)
        tracker.log_params({k: v for k, v in params.items() if k not in skip_params})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tracker.log_artifact(out_dir / "config.yaml", "resumed" if begun.state else None)
    with threadpool_limits(limits=1):   # BLAS threads would fight the emulators for 2 cores
        summary = train(cfg, begun.envs, tracker, begun.rng, out_dir, callbacks=callbacks, state=begun.state,
                        live=begun.live, progress=progress, stop=stop, ckpt_meta=ckpt_meta)
    tracker.log_metrics({"time/elapsed_s": summary["elapsed_s"],
                         "time/tracking_write_s": getattr(tracker, "write_s", 0.0)}, step=summary["episodes"])
    tracker.log_artifact(summary["model_path"])
    return summary
