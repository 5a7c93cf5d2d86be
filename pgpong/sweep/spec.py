"""Search specs (`sweeps/*.yaml`): read, check every key, and the objectives they name.

A spec is plain data; `load_spec` turns it into a `Spec` or raises `SpecError` naming the file
and the key. Objectives are pure functions of a run's `Curve`: its running reward per finished
episode and what the run had spent by then (episodes, agent steps, seconds).
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from pgpong.errors import PgpongError


class SpecError(PgpongError):
    """A spec problem, shown as `<file>: <key>: <what is wrong>`."""

    def __init__(self, file, key: str, message: str):
        super().__init__(f"{file}: {key}: {message}")


OBJECTIVES = ("final", "last_k", "auc", "time_to")
MEASURES = ("episodes", "steps", "seconds")    # what time_to counts
WORST = -21.0                                    # the lowest running reward Pong allows
AGGREGATES = {"mean": np.mean, "median": np.median, "min": np.min, "max": np.max}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "successive_halving", "hyperband", "none")
PARAM_TYPES = ("float", "int", "categorical")
TOP_KEYS = {"description", "n_trials", "direction", "episodes", "seeds", "aggregate", "objective",
            "report_every", "sampler", "pruner", "fixed", "params", "enqueue"}


@dataclass
class Param:
    name: str                    # a config key (lr, env.frameskip) or a config group (crop, baseline)
    type: str                    # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list = field(default_factory=list)


@dataclass
class Spec:
    name: str
    file: Path
    params: list[Param]
    episodes: int                               # per trial and seed
    n_trials: int = 20
    direction: str = "maximize"
    seeds: list[int] = field(default_factory=lambda: [0])
    aggregate: str = "mean"                     # how the seeds' objectives combine
    objective: str = "last_k"                   # final | last_k | auc | time_to
    k: int = 100                                # last_k: episodes averaged
    threshold: float = 0.0                      # time_to: the running reward to pass
    measure: str = "episodes"                   # time_to: episodes | steps | seconds
    report_every: int = 100                     # episodes between intermediate values
    sampler: dict = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict = field(default_factory=lambda: {"name": "median"})
    fixed: list[str] = field(default_factory=list)
    enqueue: list[dict] = field(default_factory=list)    # points tried first (e.g. the gist's settings)
    description: str = ""

    def value(self, curve: "Curve") -> float:
        """This spec's objective of one run."""
        if self.objective == "time_to":
            return time_to_value(curve.running, curve.cost(self.measure), self.threshold)
        return objective_value(curve.running, self.objective, self.k)


@dataclass
class Curve:
    """One run as its objective sees it: per finished episode, the running reward and the cumulative
    agent steps (of finished episodes) and seconds (since the run's start, set-up included)."""
    running: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, running: float, length: int, seconds: float) -> None:
        self.running.append(float(running))
        self.steps.append((self.steps[-1] if self.steps else 0) + int(length))
        self.seconds.append(float(seconds))

    def cost(self, measure: str) -> list[float]:
        if measure == "episodes":
            return list(range(1, len(self.running) + 1))
        return list(getattr(self, measure))


def objective_value(running: list[float], kind: str, k: int) -> float:
    """The objective of one running-reward curve (the gist's 0.99 moving average per episode).

    final: its last value; last_k: its mean over the last k episodes; auc: its mean over all
    episodes (the area under the curve per episode, so budgets of different length compare).
    """
    if not running:
        raise ValueError("no finished episode")
    r = np.asarray(running, np.float64)
    if kind == "final":
        return float(r[-1])
    if kind == "last_k":
        return float(r[-k:].mean())
    if kind == "auc":
        return float(r.mean())
    raise ValueError(kind)


def time_to_value(running: list[float], cost: list[float], threshold: float) -> float:
    """The cost (episodes, steps or seconds) at the first episode whose running reward is above
    `threshold`; for a run that never got there (censored), a value above every finished one:
    its total cost times 1 + (threshold - final running reward) / (threshold + 21), which lies in
    [total, 2 x total] and ranks censored runs by how close they came.
    """
    if not running:
        raise ValueError("no finished episode")
    r = np.asarray(running, np.float64)
    above = np.flatnonzero(r > threshold)
    if above.size:
        return float(cost[above[0]])
    gap = (threshold - r[-1]) / (threshold - WORST)
    return float(cost[-1]) * (1.0 + float(np.clip(gap, 0.0, 1.0)))


def reached(running: list[float], threshold: float) -> bool:
    return bool(np.any(np.asarray(running, np.float64) > threshold))


def aggregate(values: list[float], how: str) -> float:
    return float(AGGREGATES[how](np.asarray(values, np.float64)))


def spec_path(name: str, sweeps_dir: Path) -> Path:
    """`lr_h` -> sweeps/lr_h.yaml; a path to a .yaml file is taken as it is."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or "/" in name:
        return p
    return Path(sweeps_dir) / f"{name}.yaml"


def available(sweeps_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(sweeps_dir).glob("*.yaml"))


def _int(file, key, v, minimum=1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise SpecError(file, key, f"{v!r}: must be an integer >= {minimum}")
    return v


def _num(file, key, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            hint = f" (YAML reads {v} as text; write {float(v)!r})" if isinstance(v, str) and float(v) - float(v) == 0 else ""
        except ValueError:
            hint = ""
        raise SpecError(file, key, f"{v!r}: must be a number{hint}")
    return v


def _mapping(file, key, v, allowed: set) -> dict:
    if not isinstance(v, dict):
        raise SpecError(file, key, f"{v!r}: must be a mapping")
    for k in v:
        if k not in allowed:
            raise SpecError(file, f"{key}.{k}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    return v


def _choice(file, key, v, allowed) -> str:
    if v not in allowed:
        raise SpecError(file, key, f"{v!r}: must be one of {', '.join(allowed)}")
    return v


def parse_param(file, name: str, d) -> Param:
    key = f"params.{name}"
    d = _mapping(file, key, d, {"type", "low", "high", "log", "step", "choices"})
    kind = _choice(file, f"{key}.type", d.get("type"), PARAM_TYPES)
    if kind == "categorical":
        choices = d.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpecError(file, f"{key}.choices", f"{choices!r}: must be a non-empty list")
        for extra in ("low", "high", "log", "step"):
            if extra in d:
                raise SpecError(file, f"{key}.{extra}", "not used by a categorical parameter")
        return Param(name, kind, choices=list(choices))
    if "choices" in d:
        raise SpecError(file, f"{key}.choices", f"only for type: categorical (this is {kind})")
    for bound in ("low", "high"):
        if bound not in d:
            raise SpecError(file, f"{key}.{bound}", "missing")
        _num(file, f"{key}.{bound}", d[bound])
        if kind == "int" and not isinstance(d[bound], int):
            raise SpecError(file, f"{key}.{bound}", f"{d[bound]!r}: must be an integer for type: int")
    low, high = d["low"], d["high"]
    if not low < high:
        raise SpecError(file, key, f"empty range: low={low} must be below high={high}")
    log = d.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(file, f"{key}.log", f"{log!r}: must be true or false")
    if log and low <= 0:
        raise SpecError(file, f"{key}.low", f"{low}: must be > 0 with log: true")
    step = d.get("step")
    if step is not None:
        _num(file, f"{key}.step", step)
        if step <= 0 or step > high - low:
            raise SpecError(file, f"{key}.step", f"{step}: must be in (0, high - low]")
        if log:
            raise SpecError(file, f"{key}.step", "cannot be combined with log: true")
        if kind == "int" and not isinstance(step, int):
            raise SpecError(file, f"{key}.step", f"{step!r}: must be an integer for type: int")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def parse_enqueue(file, raw, params: list[Param]) -> list[dict]:
    """`enqueue:`: points the study tries before sampling, each a mapping of some params to a value
    their distribution allows (the others are sampled)."""
    if not isinstance(raw, list):
        raise SpecError(file, "enqueue", f"{raw!r}: must be a list of mappings of params to values")
    by_name, points = {p.name: p for p in params}, []
    for i, point in enumerate(raw):
        if not isinstance(point, dict) or not point:
            raise SpecError(file, f"enqueue[{i}]", f"{point!r}: must map params to values")
        for name, value in point.items():
            key, p = f"enqueue[{i}].{name}", by_name.get(name)
            if p is None:
                raise SpecError(file, key, f"not a param of this spec; params: {', '.join(by_name)}")
            if p.type == "categorical":
                if value not in p.choices:
                    raise SpecError(file, key, f"{value!r}: not one of its choices {p.choices}")
            elif (isinstance(value, bool) or not isinstance(value, (int, float)) or not p.low <= value <= p.high
                  or (p.type == "int" and not isinstance(value, int))):
                raise SpecError(file, key, f"{value!r}: must be {'an integer' if p.type == 'int' else 'a number'}"
                                f" in [{p.low}, {p.high}]")
        points.append(dict(point))
    return points


def load_spec(path: Path) -> Spec:
    """Read and check a spec file; every problem is a SpecError naming the file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(path, "sweep", "no such spec file") from None
    except IsADirectoryError:
        raise SpecError(path, "sweep", "a directory; give a spec file (sweeps/NAME.yaml) or a spec's name") from None
    except UnicodeDecodeError:
        raise SpecError(path, "sweep", "not a text file (UTF-8 YAML)") from None
    except OSError as e:
        raise SpecError(path, "sweep", f"cannot read it ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(path, where, f"malformed YAML: {problem}") from None
    if raw is None:
        raise SpecError(path, "(top)", "empty file; a spec needs at least episodes and params")
    if not isinstance(raw, dict):
        raise SpecError(path, "(top)", "must be a mapping of keys (params, episodes, ...)")
    for k in raw:
        if k not in TOP_KEYS:
            raise SpecError(path, str(k), f"unknown key; allowed: {', '.join(sorted(TOP_KEYS))}")
    if "episodes" not in raw:
        raise SpecError(path, "episodes", "missing (episodes per trial and seed)")
    episodes = _int(path, "episodes", raw["episodes"])
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise SpecError(path, "params", "must map at least one parameter name to its distribution")
    params = [parse_param(path, str(n), d) for n, d in params_raw.items()]
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                                        for s in seeds):
        raise SpecError(path, "seeds", f"{seeds!r}: must be a non-empty list of integers >= 0")
    if len(set(seeds)) != len(seeds):
        raise SpecError(path, "seeds", f"{seeds!r}: repeated seed")
    objective = _mapping(path, "objective", raw.get("objective", {"kind": "last_k"}),
                         {"kind", "k", "threshold", "measure"})
    kind = _choice(path, "objective.kind", objective.get("kind"), OBJECTIVES)
    k = _int(path, "objective.k", objective.get("k", 100))
    if "k" in objective and kind != "last_k":
        raise SpecError(path, "objective.k", f"only for kind: last_k (this is {kind})")
    for key in ("threshold", "measure"):
        if key in objective and kind != "time_to":
            raise SpecError(path, f"objective.{key}", f"only for kind: time_to (this is {kind})")
    threshold = _num(path, "objective.threshold", objective.get("threshold", 0.0))
    if not WORST < threshold < -WORST:
        raise SpecError(path, "objective.threshold", f"{threshold}: must be a running reward in (-21, 21)")
    measure = _choice(path, "objective.measure", objective.get("measure", "episodes"), MEASURES)
    direction = _choice(path, "direction", raw.get("direction", "maximize"), ("maximize", "minimize"))
    if kind == "time_to" and direction != "minimize":
        raise SpecError(path, "direction", f"{direction}: kind time_to counts a cost, so it must be minimize")
    sampler = _mapping(path, "sampler", raw.get("sampler", {"name": "tpe"}), {"name", "seed", "n_startup_trials"})
    _choice(path, "sampler.name", sampler.get("name"), SAMPLERS)
    if sampler.get("seed") is not None:
        _int(path, "sampler.seed", sampler["seed"], 0)
    if "n_startup_trials" in sampler:
        _int(path, "sampler.n_startup_trials", sampler["n_startup_trials"], 0)
    pruner = _mapping(path, "pruner", raw.get("pruner", {"name": "median"}),
                      {"name", "n_startup_trials", "n_warmup_steps", "min_resource", "reduction_factor"})
    _choice(path, "pruner.name", pruner.get("name"), PRUNERS)
    for key, minimum in (("n_startup_trials", 0), ("n_warmup_steps", 0), ("min_resource", 1),
                         ("reduction_factor", 2)):
        if key in pruner:
            _int(path, f"pruner.{key}", pruner[key], minimum)
    fixed = raw.get("fixed", [])
    if not isinstance(fixed, list) or any(not isinstance(o, str) or "=" not in o for o in fixed):
        raise SpecError(path, "fixed", f"{fixed!r}: must be a list of Hydra overrides like 'gamma=0.99'")
    report_every = _int(path, "report_every", raw.get("report_every", max(1, episodes // 10)))
    enqueue = parse_enqueue(path, raw.get("enqueue", []), params)
    return Spec(name=path.stem, file=path, params=params, episodes=episodes,
                n_trials=_int(path, "n_trials", raw.get("n_trials", 20)),
                direction=direction, threshold=float(threshold), measure=measure,
                seeds=seeds, aggregate=_choice(path, "aggregate", raw.get("aggregate", "mean"), tuple(AGGREGATES)),
                objective=kind, k=k, report_every=report_every, sampler=dict(sampler), pruner=dict(pruner),
                fixed=list(fixed), enqueue=enqueue, description=str(raw.get("description", "")))
