"""Typed configuration: the schema Hydra composes `conf/` into, and its validation.

Every key has a one-line meaning. Unknown keys and wrong types are rejected by Hydra
(struct mode of the schema); values that are well-typed but impossible are rejected by
`validate`, before anything starts.
"""
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from pgpong.core.preprocess import FRAME_HEIGHT, FRAME_WIDTH
from pgpong.errors import PgpongError


@dataclass
class EnvConfig:
    id: str = "ALE/Pong-v5"                             # gymnasium id
    frameskip: Optional[int] = None                     # None: the id's own (v0: random 2..4, v5: 4)
    repeat_action_probability: Optional[float] = None   # sticky actions; None: the id's own (0.25)
    num_envs: int = 1                                   # emulators stepped together
    num_threads: int = 1                                # emulator threads of each group's vector env
    vector: bool = False                                # ale-py's AtariVectorEnv (fixed-frameskip ALE ids) instead of gymnasium envs
    groups: int = 1                                     # vector path: vector envs stepped in turn (2: act for one while the other runs)
    max_episode_steps: Optional[int] = None             # cap on agent steps per episode; None: the id's own


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


CHOICES = {
    "input.kind": ("diff", "raw", "stack"),
    "baseline.kind": ("standardize", "none", "mean", "value"),
    "optim.name": ("rmsprop", "adam"),
    "actions.kind": ("two", "three"),
    "tracking.backend": ("mlflow", "none"),
    "dtype": ("float32", "float64"),
}


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def validate(cfg: Any) -> None:
    """Raise PgpongError naming the first impossible value and what is allowed."""
    positive_ints = ("H", "batch_size", "episodes", "checkpoint_every", "checkpoint_keep", "env.num_envs", "env.num_threads")
    for key in positive_ints:
        if _get(cfg, key) < 1:
            raise PgpongError(f"{key}={_get(cfg, key)}: must be a positive integer")
    if cfg.env.groups < 1 or (cfg.env.vector and cfg.env.num_envs % cfg.env.groups):   # gymnasium path: no groups
        raise PgpongError(f"env.groups={cfg.env.groups}: must be a positive divisor of env.num_envs={cfg.env.num_envs} "
                          f"(env.groups=1 keeps every env in one vector env)")
    if cfg.env.vector and cfg.env.num_threads > cfg.env.num_envs:
        raise PgpongError(f"env.num_threads={cfg.env.num_threads}: must be <= env.num_envs={cfg.env.num_envs}")
    if not cfg.lr > 0:
        raise PgpongError(f"lr={cfg.lr}: must be > 0")
    if not 0 < cfg.gamma <= 1:
        raise PgpongError(f"gamma={cfg.gamma}: must be in (0, 1]")
    if not 0 <= cfg.decay_rate < 1:
        raise PgpongError(f"decay_rate={cfg.decay_rate}: must be in [0, 1)")
    if cfg.seed < 0:
        raise PgpongError(f"seed={cfg.seed}: must be >= 0")
    for key, allowed in CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise PgpongError(f"{key}={_get(cfg, key)}: must be one of {', '.join(allowed)}")
    if not cfg.optim.eps > 0:
        raise PgpongError(f"optim.eps={cfg.optim.eps}: must be > 0")
    if cfg.optim.name == "adam":
        for key in ("optim.beta1", "optim.beta2"):
            if not 0 <= _get(cfg, key) < 1:
                raise PgpongError(f"{key}={_get(cfg, key)}: must be in [0, 1)")
    if cfg.baseline.kind == "value" and not cfg.baseline.lr > 0:
        raise PgpongError(f"baseline.lr={cfg.baseline.lr}: must be > 0")
    validate_crop(cfg.crop)
    from pgpong.engine.envs import check_ale_id   # gymnasium and ale-py load when a config is checked
    check_ale_id(cfg.env.id)


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


OPTION_KEYS = {"baseline": "kind", "optim": "name"}   # the key choosing each OPTION_SCHEMAS group's schema


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
        for group, key in OPTION_KEYS.items():
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
