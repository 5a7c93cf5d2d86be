"""Typed configuration: the schema Hydra composes `conf/` into, and its validation.

Every key has a one-line meaning. Unknown keys and wrong types are rejected by Hydra
(struct mode of the schema); values that are well-typed but impossible are rejected by
`validate`, before anything starts.
"""
import math
from dataclasses import dataclass, field, fields, is_dataclass
from types import SimpleNamespace
from typing import Any, Callable, NamedTuple, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from pgpong.core.preprocess import FRAME_HEIGHT, FRAME_WIDTH
from pgpong.engine import memory
from pgpong.errors import PgpongError


@dataclass
class EnvConfig:
    id: str = "ALE/Pong-v5"                             # gymnasium id
    frameskip: Optional[int] = None                     # None: the id's own (v0: random 2..4, v5: 4)
    repeat_action_probability: Optional[float] = None   # sticky actions; None: the id's own (0.25)
    num_envs: int = 1                                   # emulators stepped together
    num_threads: int = 1                                # emulator threads of each group's vector env; 0: the cores shared among the groups
    vector: bool = False                                # ale-py's AtariVectorEnv (fixed-frameskip ALE ids) instead of gymnasium envs
    groups: int = 1                                     # vector path: vector envs stepped in turn (2: act for one while the other runs)
    max_episode_steps: Optional[int] = None             # cap on agent steps per episode; None: the id's own
    emulator_nice: int = 0                              # vector path, Linux: emulator threads this much nicer than training's


@dataclass
class TrackingConfig:
    backend: str = "mlflow"                  # mlflow | none
    uri: str = "sqlite:///mlflow.db"         # relative sqlite paths resolve against the launch directory
    experiment: str = "pgpong"               # MLflow experiment name
    flush_every_s: float = 10.0              # metrics are batched and written at most this often


@dataclass
class CropConfig:
    top: int = 35       # first frame row kept (the gist: I[35:195])
    bottom: int = 195   # one past the last row kept
    left: int = 0       # first column kept
    right: int = 160    # one past the last column kept
    stride: int = 2     # keep every stride-th row and column


@dataclass
class InputConfig:
    kind: str = "diff"   # diff: current minus previous frame (the gist) | raw: current | stack: both


@dataclass
class BaselineConfig:
    kind: str = "standardize"   # standardize (the gist) | none | mean


@dataclass
class ValueBaselineConfig:
    kind: str = "value"         # a learned V(s) subtracted from the return
    lr: float = 1e-3            # the value head's own learning rate


@dataclass
class RMSPropConfig:
    name: str = "rmsprop"   # the gist's optimizer; its decay is the top-level decay_rate
    eps: float = 1e-5       # added to the root-mean-square in the denominator


@dataclass
class AdamConfig:
    name: str = "adam"
    beta1: float = 0.9      # first-moment decay
    beta2: float = 0.999    # second-moment decay
    eps: float = 1e-8       # added to the root of the second moment


@dataclass
class ActionsConfig:
    kind: str = "two"   # two: UP/DOWN with a sigmoid (the gist) | three: UP/DOWN/NOOP with a softmax


@dataclass
class Config:
    H: int = 200                  # hidden layer neurons
    lr: float = 1e-4              # learning rate
    batch_size: int = 10          # episodes per parameter update
    gamma: float = 0.99           # discount factor for reward
    decay_rate: float = 0.99      # RMSProp leaky average of grad^2
    seed: int = 0                 # one seed for weights, actions and emulators
    episodes: int = 10000         # episodes to train
    stop_at: Optional[float] = None  # end the run once the running reward passes this (0: it beats the built-in AI); null: all episodes
    dtype: str = "float32"        # float32 | float64 for weights and activations
    checkpoint_every: int = 100   # episodes between model/checkpoint files
    checkpoint_keep: int = 3      # newest training checkpoints kept in <output dir>/checkpoints
    resume: Optional[str] = None  # continue from a checkpoint: MLflow run id, .npz file or checkpoints folder
    log_every_s: float = 30.0     # seconds between plain progress lines when not on a terminal
    env: EnvConfig = field(default_factory=EnvConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    input: InputConfig = field(default_factory=InputConfig)
    baseline: Any = MISSING       # one of the schemas in OPTION_SCHEMAS["baseline"]
    optim: Any = MISSING          # one of the schemas in OPTION_SCHEMAS["optim"]
    actions: ActionsConfig = field(default_factory=ActionsConfig)


# Groups whose options have different keys: each option file extends its own schema
# (`defaults: [/<group>_<option>_schema@_here_]`), so a key of another option is rejected. The
# schemas are stored outside the groups, so they are not offered as options (e.g. in --help).
OPTION_SCHEMAS = {
    "baseline": {"standardize": BaselineConfig, "none": BaselineConfig, "mean": BaselineConfig,
                 "value": ValueBaselineConfig},
    "optim": {"rmsprop": RMSPropConfig, "adam": AdamConfig},
}


def register() -> None:
    """Make the schemas known to Hydra: `config_schema` (the primary config extends it) and
    `<group>_<option>_schema` for the groups whose options differ in keys."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, options in OPTION_SCHEMAS.items():
        for option, schema in options.items():
            cs.store(name=f"{group}_{option}_schema", node=schema)
    register_launchers()


def register_launchers() -> None:
    """pgpong's cluster launchers (`hydra/launcher=slurm|ray`), registered by importing them: Hydra
    scans the `hydra_plugins` namespace for plugins, and that scan cannot list the modules of an
    editable install, which setuptools serves through an import hook."""
    from hydra.core.plugins import Plugins
    try:
        from hydra_plugins.pgpong_launchers import ray, slurm
    except ImportError:            # the `cluster` extra (submitit, ray) is not installed
        return
    plugins = Plugins.instance()
    for launcher in (ray.RayLauncher, slurm.SlurmLauncher):
        if f"{launcher.__module__}.{launcher.__name__}" not in plugins.class_name_to_class:
            plugins.register(launcher)


# ---- what each value may be ----------------------------------------------------------------------

class Rule(NamedTuple):
    """What a key's value may be: `ok(value)`, and the words that finish "must be ..."."""
    ok: Callable[[Any], bool]
    allowed: str
    optional: bool = False      # null is allowed too (the key's comment says what it means)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def choice(*options: str) -> Rule:
    return Rule(lambda v: v in options, "one of " + ", ".join(options))


ANY = Rule(lambda v: True, "")                                      # typed by the schema; nothing more to check
POSITIVE_INT = Rule(lambda v: v >= 1, "a positive integer")
NON_NEGATIVE_INT = Rule(lambda v: v >= 0, ">= 0")
POSITIVE_FINITE = Rule(lambda v: _finite(v) and v > 0, "> 0 and finite")
SECONDS = Rule(lambda v: _finite(v) and v >= 0, ">= 0 and finite (0: at every episode)")
UNIT_LEFT_CLOSED = Rule(lambda v: 0 <= v < 1, "in [0, 1)")             # decays, sticky actions: 1 never moves
GAMMA = Rule(lambda v: 0 < v <= 1, "in (0, 1]")
TEXT = Rule(lambda v: bool(v.strip()), "a non-empty string")

# Every key of the schema (and of each option's schema) and what it allows; docs/configs.md lists
# the same. Keys that depend on each other (env.groups and env.num_envs, the crop window, the
# memory all sizes take together) are checked after these, in `validate`.
RULES = {
    "H": POSITIVE_INT,
    "lr": POSITIVE_FINITE,
    "batch_size": POSITIVE_INT,
    "gamma": GAMMA,
    "decay_rate": UNIT_LEFT_CLOSED,
    "seed": NON_NEGATIVE_INT,
    "episodes": POSITIVE_INT,
    "stop_at": Rule(lambda v: _finite(v) and -21 < v < 21, "a running reward in (-21, 21)", optional=True),
    "dtype": choice("float32", "float64"),
    "checkpoint_every": POSITIVE_INT,
    "checkpoint_keep": POSITIVE_INT,
    "resume": ANY,                      # a run id, .npz file or folder: looked up when the run starts
    "log_every_s": SECONDS,
    "env.id": ANY,
    "env.frameskip": POSITIVE_INT._replace(optional=True),
    "env.repeat_action_probability": UNIT_LEFT_CLOSED._replace(optional=True),
    "env.num_envs": POSITIVE_INT,
    "env.num_threads": Rule(lambda v: v >= 0, ">= 0 (0: one emulator thread per core, shared among env.groups)"),
    "env.vector": ANY,
    "env.groups": POSITIVE_INT,
    "env.max_episode_steps": POSITIVE_INT._replace(optional=True),
    "env.emulator_nice": NON_NEGATIVE_INT,
    "tracking.backend": choice("mlflow", "none"),
    "tracking.uri": TEXT,
    "tracking.experiment": TEXT,
    "tracking.flush_every_s": SECONDS,
    "crop.top": NON_NEGATIVE_INT,
    "crop.bottom": POSITIVE_INT,
    "crop.left": NON_NEGATIVE_INT,
    "crop.right": POSITIVE_INT,
    "crop.stride": Rule(lambda v: v >= 1, ">= 1"),
    "input.kind": choice("diff", "raw", "stack"),
    "baseline.kind": choice(*OPTION_SCHEMAS["baseline"]),
    "baseline.lr": POSITIVE_FINITE,
    "optim.name": choice(*OPTION_SCHEMAS["optim"]),
    "optim.eps": POSITIVE_FINITE,
    "optim.beta1": UNIT_LEFT_CLOSED,
    "optim.beta2": UNIT_LEFT_CLOSED,
    "actions.kind": choice("two", "three"),
}
OPTION_KEY = {"baseline": "kind", "optim": "name"}   # the key that says which option a group's node is


def _get(values: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def validate(cfg: Any) -> None:
    """Raise PgpongError naming the first impossible value and what is allowed (cfg: composed, or as plain dicts)."""
    try:                                    # ${...} interpolations: each must resolve to a value of its type
        values = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise PgpongError(f"{e.full_key or '?'}: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    check_keys(values)
    for key in schema_keys(values):
        rule, value = RULES[key], _get(values, key)
        if not (rule.optional and value is None) and not rule.ok(value):
            raise PgpongError(f"{key}={value}: must be {rule.allowed}" + (" or null" if rule.optional else ""))
    c = _namespace(values)                  # plain attributes: OmegaConf's are slow for a sweep's many checks
    if c.env.vector and c.env.num_envs % c.env.groups:   # gymnasium path: no groups
        raise PgpongError(f"env.groups={c.env.groups}: must be a positive divisor of env.num_envs={c.env.num_envs} "
                          f"(env.groups=1 keeps every env in one vector env)")
    if c.env.vector and c.env.num_threads > c.env.num_envs:
        raise PgpongError(f"env.num_threads={c.env.num_threads}: must be <= env.num_envs={c.env.num_envs}")
    validate_crop(c.crop)
    check_memory(c)
    from pgpong.engine.envs import check_ale_id   # gymnasium and ale-py load when a config is checked
    check_ale_id(c.env.id)


def _namespace(values: dict) -> SimpleNamespace:
    return SimpleNamespace(**{k: _namespace(v) if isinstance(v, dict) else v for k, v in values.items()})


def schema_keys(values: dict) -> list[str]:
    """The dotted keys the schema gives this config (its baseline's and optimizer's own keys included)."""
    def walk(schema, prefix: str) -> list[str]:
        keys = []
        for f in fields(schema):
            sub = _sub_schema(values, prefix + f.name, f)
            keys += walk(sub, f"{prefix}{f.name}.") if sub else [prefix + f.name]
        return keys
    return walk(Config, "")


def _sub_schema(values: dict, key: str, f) -> Any:
    """The schema of a nested node: the field's dataclass, or the option's schema for baseline and optim."""
    if key in OPTION_SCHEMAS:
        return OPTION_SCHEMAS[key][values[key][OPTION_KEY[key]]]
    return f.default_factory if is_dataclass(f.default_factory) else None


def check_keys(values: dict) -> None:
    """The config holds exactly the schema's keys: none added (+key=...), none deleted (~key)."""
    def walk(node: dict, schema, prefix: str) -> None:
        names = [f.name for f in fields(schema)]
        for k in node:
            if k not in names:
                where = f"in '{prefix[:-1]}'" if prefix else "at the top level"
                raise PgpongError(f"{prefix}{k}: unknown key; allowed {where}: {', '.join(names)}")
        for f in fields(schema):
            key = prefix + f.name
            if node.get(f.name, MISSING) == MISSING:
                options = f"; choose one of {', '.join(OPTION_SCHEMAS[key])}" if key in OPTION_SCHEMAS else ""
                raise PgpongError(f"{key}: missing; every key needs a value{options}")
            if key in OPTION_SCHEMAS:
                walk_option(node[f.name], key)
            elif is_dataclass(f.default_factory):
                walk(node[f.name], f.default_factory, key + ".")

    def walk_option(node, group: str) -> None:
        """An option's keys are those of the option its kind/name says (baseline=value has lr, ...)."""
        if not isinstance(node, dict) or OPTION_KEY[group] not in node:
            raise PgpongError(f"{group}: must be an option; choose one of {', '.join(OPTION_SCHEMAS[group])}")
        key, kind = f"{group}.{OPTION_KEY[group]}", node[OPTION_KEY[group]]
        if kind not in OPTION_SCHEMAS[group]:
            raise PgpongError(f"{key}={kind}: must be {RULES[key].allowed}")
        schema, present = OPTION_SCHEMAS[group][kind], set(node)
        expected = [f.name for f in fields(schema)]
        if any(present == {f.name for f in fields(s)} != set(expected) for s in OPTION_SCHEMAS[group].values()):
            raise PgpongError(f"{key}={kind}: that option has the keys {', '.join(expected)}, this {group} has "
                              f"{', '.join(node)}; choose with {group}=<option> "
                              f"({', '.join(OPTION_SCHEMAS[group])}), not {key}")
        walk(node, schema, group + ".")

    walk(values, Config, "")


def validate_crop(crop: Any) -> None:
    """Crop bounds must select a non-empty window inside the 210x160 frame."""
    if crop.stride < 1:
        raise PgpongError(f"crop.stride={crop.stride}: must be >= 1")
    if not 0 <= crop.top < crop.bottom <= FRAME_HEIGHT:
        raise PgpongError(
            f"crop.top={crop.top}, crop.bottom={crop.bottom}: need 0 <= top < bottom <= {FRAME_HEIGHT} (frame rows)")
    if not 0 <= crop.left < crop.right <= FRAME_WIDTH:
        raise PgpongError(
            f"crop.left={crop.left}, crop.right={crop.right}: need 0 <= left < right <= {FRAME_WIDTH} (frame columns)")


def validate_saved(saved: Any, source) -> Any:
    """The config stored in a model or checkpoint file, checked as a command line's is: the schema
    (no unknown keys, typed values), no interpolations (a file is data), then `validate`.

    Returns it as a typed config; a PgpongError names `source` and the first bad field.
    """
    try:
        if not isinstance(saved, dict):
            raise PgpongError("no training config inside (not a pgpong model or checkpoint?)")
        _refuse_interpolations(saved, "")
        schema = OmegaConf.structured(Config)
        for group, key in OPTION_KEY.items():
            choice = saved[group].get(key) if isinstance(saved.get(group), dict) else None
            if choice not in OPTION_SCHEMAS[group]:
                raise PgpongError(f"{group}.{key}={choice}: must be one of {', '.join(OPTION_SCHEMAS[group])}")
            schema[group] = OmegaConf.structured(OPTION_SCHEMAS[group][choice])
        try:
            cfg = OmegaConf.merge(schema, saved)
        except (ConfigAttributeError, ConfigKeyError) as e:
            raise PgpongError(f"{e.full_key}: unknown key (not in pgpong's config schema)") from None
        except OmegaConfBaseException as e:
            raise PgpongError(f"{e.full_key or 'config'}: {str(e).splitlines()[0]}") from None
        validate(cfg)
    except PgpongError as e:
        raise PgpongError(f"{source}: {e}") from None
    return cfg


def _refuse_interpolations(node: Any, prefix: str) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            _refuse_interpolations(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _refuse_interpolations(v, f"{prefix}{i}.")
    elif isinstance(node, str) and "${" in node:
        raise PgpongError(f"{prefix.rstrip('.')}={node}: interpolations are not allowed in a saved config")


def check_memory(cfg: Any, available: int | None = None) -> None:
    """The run's arrays fit in the memory this machine has free (pgpong/engine/memory.py counts them)."""
    available = memory.available() if available is None else available
    if available is None:
        return
    parts = memory.estimate(cfg)
    total = sum(parts.values())
    if total > available:
        raise PgpongError(
            f"H={cfg.H}, env.num_envs={cfg.env.num_envs}: a run needs about {memory.human(total)} of memory ("
            + ", ".join(f"{k} {memory.human(v)}" for k, v in parts.items())
            + f"), more than the {memory.human(available)} available; lower H, env.num_envs or env.max_episode_steps")
