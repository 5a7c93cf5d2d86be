"""What identifies a run: its name from the overrides, its flattened params, its tags."""
import subprocess

from omegaconf import OmegaConf

from pgpong.paths import PROJECT_DIR

NOT_IN_NAME = ("tracking", "hydra", "log_every_s", "checkpoint_every", "resume")


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
    """HEAD of the project's checkout (with -dirty when it has changes), or None."""
    try:
        rev = subprocess.run(["git", "-C", str(PROJECT_DIR), "rev-parse", "--verify", "-q", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        head = rev.stdout.strip() if rev.returncode == 0 else ""
        dirty = subprocess.run(["git", "-C", str(PROJECT_DIR), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("-dirty" if dirty else "")) if head else None
