"""What identifies a run: its name from the overrides, its description, its flattened params, its tags."""
import subprocess

from omegaconf import OmegaConf

from pgpong.paths import CONF_DIR, SOURCE_DIR

NOT_IN_NAME = ("tracking", "hydra", "log_every_s", "checkpoint_every", "resume")
SPEED_ONLY = ("env.emulator_nice", "env.num_threads")   # keys that change no episode, only how soon it comes
NOTE_TAG = "mlflow.note.content"     # the run's description in MLflow's UI (Markdown)


def run_name(overrides: list[str], cfg) -> str:
    """`crop=fix,lr=0.001,seed=3`: the overrides that change the experiment, sorted, seed always.

    Values of plain keys are shown as the config resolved them (1e-3 -> 0.001); group choices
    (crop=fix) as typed.
    """
    parts = {}
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key.split(".")[0].split("/")[0] in NOT_IN_NAME:
            continue
        resolved = OmegaConf.select(cfg, key, default=None)
        parts[key] = value if resolved is None or OmegaConf.is_config(resolved) else str(resolved)
    parts["seed"] = str(cfg.seed)
    return ",".join(f"{k}={v}" for k, v in sorted(parts.items()))


def description(cfg, choices: dict, overrides: list[str] = ()) -> str:
    """Two lines saying what a run is: what it changes from the defaults (the gist's algorithm),
    then its engine and seed.

    choices: the run's config group choices (HydraConfig's runtime.choices). A group chosen
    otherwise, or named in the overrides, is shown by name (`crop=fix`); values are compared with
    the defaults of the chosen groups, so only what the overrides or an experiment file set is listed.
    """
    default_choices = _choices(_compose([]))
    named = {o.lstrip("+~").partition("=")[0] for o in overrides}
    groups = {g: c for g, c in choices.items() if g in default_choices and g.split("/")[0] not in NOT_IN_NAME}
    changed = [f"{g}={c}" for g, c in groups.items() if c is not None and (c != default_choices[g] or g in named)]
    same_groups = _compose([f"{g}={c}" for g, c in groups.items() if c is not None and g != "experiment"])
    baseline = flatten(OmegaConf.masked_copy(same_groups, [k for k in same_groups if k != "hydra"]))
    for key, value in flatten(cfg).items():
        if key.split(".")[0] not in (*NOT_IN_NAME, "seed") and (key not in baseline or baseline[key] != value):
            changed.append(f"{key}={value}")
    what = ("Overrides of the defaults (the gist's algorithm): " + ", ".join(f"`{c}`" for c in changed)
            if changed else "The defaults (the gist's algorithm), unchanged")
    env = cfg.env
    if env.vector:
        engine = f"ale-py AtariVectorEnv on {env.id}, {env.num_envs} emulators in {env.groups} group(s)"
    else:
        engine = f"gymnasium {env.id}, {env.num_envs} env(s)"
    return f"{what}.\nEngine: {engine}; seed {cfg.seed}."


def _choices(composed) -> dict:
    """{group: choice} of a config composed with its hydra node."""
    return dict(OmegaConf.to_container(composed.hydra.runtime.choices))


def _compose(overrides: list[str]):
    """conf/config.yaml composed with overrides and its hydra node, inside or outside a Hydra app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def flatten(cfg) -> dict:
    """Every resolved config value under its dotted key."""
    out = {}

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            else:
                out[key] = v
    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def run_params(cfg, envs) -> dict:
    """What a run logs as params: the resolved config, the env's resolved settings, the input size D."""
    from pgpong.core.preprocess import input_size
    params = flatten(cfg)
    params.update(envs.describe())
    params["D"] = input_size(cfg.crop, cfg.input.kind)
    return params


def git_commit() -> str | None:
    """HEAD of the project's checkout (with -dirty when it has changes), or None (e.g. installed from a wheel)."""
    if SOURCE_DIR is None:
        return None
    try:
        rev = subprocess.run(["git", "-C", str(SOURCE_DIR), "rev-parse", "--verify", "-q", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        head = rev.stdout.strip() if rev.returncode == 0 else ""
        dirty = subprocess.run(["git", "-C", str(SOURCE_DIR), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty else "")) if head else None
