"""Optuna search over a spec in sweeps/, every trial a real training run tracked in MLflow.

    python -m pgpong.sweep sweep=lr_h n_trials=40                      # ./optuna.db, ./mlflow.db
    python -m pgpong.sweep sweep=lr_h storage=postgresql://user@host/db study=lr_h_v2
    python -m pgpong.sweep sweep=lr_h n_trials=8 episodes=20 env.max_episode_steps=200   # any Hydra override

Driver keys: sweep (the name of a spec shipped in sweeps/, or the path of a .yaml spec), n_trials
(the study's total across all workers), storage (an RDB URL, default sqlite:///optuna.db next to
mlflow.db; or a file path for Optuna's journal file storage), study (default: the spec's name),
episodes (per trial and seed, overrides the spec's). Any other key=value is a Hydra override
applied to every trial.

Each trial composes the config with the spec's fixed overrides plus its sampled values and starts
each seed's run as `python -m pgpong.run` does (pgpong/launch.py), with a callback that reports
the objective every `report_every` episodes and raises `optuna.TrialPruned` when the pruner says
so. Re-running
the same command resumes the study; several workers (processes or machines) share it through one
storage and one MLflow server, and stop together when the study holds n_trials trials.
"""
import copy
import os
import re
import socket
import sys
import time
import warnings
from pathlib import Path

from itertools import product

import yaml
from omegaconf import OmegaConf

from pgpong.cluster import scheduler_job
from pgpong.config import validate
from pgpong.errors import PgpongError, entry_point
from pgpong.files import write_atomic
from pgpong.launch import compose, config_groups, start, train_run
from pgpong.paths import SWEEPS_DIR, resolve_path, resolve_sqlite_uri
from pgpong.sweep.spec import (
    Curve,
    Param,
    Spec,
    SpecError,
    aggregate,
    available,
    load_spec,
    reached,
    spec_path,
)
from pgpong.tracking import naming
from pgpong.tracking.store import check_store, faults, first_use_lock, open_client
from pgpong.tracking.tracker import NullTracker, experiment_id, make_tracker, retry_locked

DRIVER_KEYS = ("sweep", "n_trials", "storage", "study", "episodes")
WORKER = f"{socket.gethostname()}:{os.getpid()}" + (f" ({scheduler_job()})" if scheduler_job() else "")   # who ran a trial
STUDY_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class SurplusTrial(Exception):
    """Another worker took the study's last trial between our count and our ask."""


# ---- arguments and config composition ------------------------------------------------------

def parse_args(argv: list[str]) -> tuple[dict, list[str]]:
    """Driver keys and the remaining Hydra overrides."""
    args, overrides = {}, []
    for a in argv:
        key, eq, value = a.partition("=")
        if not eq:
            raise PgpongError(f"pgpong.sweep: {a}: expected key=value (e.g. sweep=lr_h n_trials=40)")
        if key in DRIVER_KEYS:
            args[key] = value
        else:
            overrides.append(a)
    if "sweep" not in args:
        raise PgpongError(f"pgpong.sweep: sweep: missing; available: {', '.join(available(SWEEPS_DIR))}")
    return args, overrides


def checked_cfg(file, key: str, overrides: list[str]):
    """Compose and validate, or a SpecError naming the spec key that produced the overrides."""
    try:
        return compose(overrides)
    except PgpongError as e:
        raise SpecError(file, key, str(e)) from None


def override(name: str, value) -> str:
    return f"{name}={value!r}" if isinstance(value, float) else f"{name}={value}"


SET_BY_SWEEP = ("seed", "episodes", "stop_at")   # the spec's seeds, episodes and time_to threshold set them
MAX_COMBINATIONS = 20000                # joint extremes checked at most (each takes ~1 ms)


def check_params(spec: Spec, base: list[str]) -> None:
    """Every parameter names a config key or group, and every value it can take is allowed: each
    extreme (or choice) composes and validates alone, and so do the extremes taken together."""
    cfg = checked_cfg(spec.file, "fixed", base)
    groups = config_groups()
    typed = {}        # param -> [(its extreme as in the spec, as the composed config holds it)]
    composed = {}     # a group choice composed once: (param, value) -> config
    for p in spec.params:
        key = f"params.{p.name}"
        if p.name.lstrip("+~") in SET_BY_SWEEP:
            raise SpecError(spec.file, key, f"{p.name}: set by the sweep itself (seeds, episodes in the spec)")
        if p.type != "categorical":
            node = OmegaConf.select(cfg, p.name, default="__missing__")
            if node == "__missing__":
                raise SpecError(spec.file, key, f"unknown parameter: no config key {p.name!r}")
            if OmegaConf.is_config(node):
                raise SpecError(spec.file, key, f"{p.name!r} is a config group: use type: categorical")
        typed[p.name] = []
        for v in extremes(p):
            one = checked_cfg(spec.file, key, base + [override(p.name, v)])
            typed[p.name].append((v, v if p.name in groups else OmegaConf.select(one, p.name)))
            if p.name in groups:
                composed[override(p.name, v)] = one
    check_combinations(spec, base, cfg, typed, groups, composed)


def extremes(p: Param) -> list:
    """The values a parameter can take that bound all others: its choices, or its lowest and highest."""
    if p.type == "categorical":
        return list(p.choices)
    high = p.high if p.step is None else p.low + (p.high - p.low) // p.step * p.step   # the highest on the grid
    return [float(p.low), float(high)] if p.type == "float" else [p.low, high]


def check_combinations(spec: Spec, base: list[str], cfg, typed: dict, groups: list[str], composed: dict) -> None:
    """The parameters' extremes taken together validate (e.g. H and env.num_envs both at their
    highest, for the memory they need; crop.top high with crop.bottom low): one composition per
    choice of config groups (`composed` holds those of one group), then every combination of the
    other parameters' extremes set on it."""
    group_params = [p.name for p in spec.params if p.name in groups]
    key_params = [p.name for p in spec.params if p.name not in groups]
    group_sets = list(product(*(typed[n] for n in group_params)))
    key_sets = list(product(*(typed[n] for n in key_params)))
    if len(group_sets) * len(key_sets) > MAX_COMBINATIONS:
        return
    for group_values in group_sets:
        chosen = [override(n, v) for n, (v, _) in zip(group_params, group_values)]
        group_cfg = cfg if not chosen else composed[chosen[0]] if len(chosen) == 1 else \
            checked_cfg(spec.file, "params", base + chosen)
        values = OmegaConf.to_container(group_cfg, resolve=True)
        for key_values in key_sets:
            trial_values = copy.deepcopy(values)
            for name, (_, value) in zip(key_params, key_values):
                *parents, leaf = name.split(".")
                node = trial_values
                for part in parents:
                    node = node[part]
                node[leaf] = value
            try:
                validate(trial_values)
            except PgpongError as e:
                combo = chosen + [override(n, v) for n, (v, _) in zip(key_params, key_values)]
                raise SpecError(spec.file, "params", f"{' '.join(combo)} (sampled together): {e}") from None


def suggest(trial, p: Param):
    if p.type == "float":
        return trial.suggest_float(p.name, p.low, p.high, log=p.log, step=p.step)
    if p.type == "int":
        return trial.suggest_int(p.name, p.low, p.high, log=p.log, step=p.step or 1)
    return trial.suggest_categorical(p.name, p.choices)


# ---- Optuna pieces ---------------------------------------------------------------------------

def make_sampler(spec: Spec):
    import optuna
    s = spec.sampler
    if s["name"] == "random":
        return optuna.samplers.RandomSampler(seed=s.get("seed"))
    kwargs = {"seed": s.get("seed")}
    if "n_startup_trials" in s:
        kwargs["n_startup_trials"] = s["n_startup_trials"]
    return optuna.samplers.TPESampler(**kwargs)


def step_span(spec: Spec) -> int:
    """Room on Optuna's step axis for one seed: seed j reports at steps j * step_span + progress."""
    if spec.objective == "time_to" and spec.measure != "episodes":
        return 10**12          # agent steps or seconds: no fixed budget
    return spec.episodes


def make_pruner(spec: Spec):
    """Steps run on one axis across seeds: seed j's progress p (episodes; for time_to, what it
    measures) is step j * step_span + p."""
    import optuna
    p = spec.pruner
    max_resource = spec.episodes * len(spec.seeds) if step_span(spec) == spec.episodes else "auto"
    if p["name"] == "none":
        return optuna.pruners.NopPruner()
    if p["name"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.get("n_startup_trials", 5),
                                           n_warmup_steps=p.get("n_warmup_steps", 0), interval_steps=1)
    min_resource = p.get("min_resource", spec.report_every)
    reduction = p.get("reduction_factor", 3)
    if p["name"] == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction)
    return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource,
                                          reduction_factor=reduction)


SCHEMA_RACE_TRIES = 5
SCHEMA_RACE_MESSAGES = ("already exists", "duplicate key", "UniqueViolation", "UNIQUE constraint failed")


def make_storage(url: str, launch_dir: Path, file):
    """(Optuna storage, the storage's name without secrets) for an RDB URL or a journal file path."""
    import optuna
    if "://" not in url:     # a plain path: Optuna's journal file storage
        path = resolve_path(url, launch_dir).resolve()
        if not path.parent.is_dir():
            raise SpecError(file, "storage", f"{url}: directory {path.parent} does not exist")
        from optuna.storages.journal import JournalFileBackend
        return optuna.storages.JournalStorage(JournalFileBackend(str(path))), f"journal:{path}"
    url = resolve_sqlite_uri(url, launch_dir, "storage")
    from sqlalchemy.engine import make_url
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception as e:
        raise SpecError(file, "storage", f"{url}: not a database URL ({e})") from None
    engine_kwargs = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    for attempt in range(SCHEMA_RACE_TRIES):
        try:
            # heartbeats (stale trials of dead workers -> FAIL) are "experimental"; a fresh SQLite
            # file gets its tables from one process at a time (first_use_lock)
            with warnings.catch_warnings(), first_use_lock(url):
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=60,
                                                  grace_period=180), shown
        except Exception as e:   # driver missing, host down, wrong password, ...
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            # Workers on other machines opening a fresh database at once race to create Optuna's
            # tables; the loser sees them "already exist". The tables are there now: open again.
            if attempt + 1 < SCHEMA_RACE_TRIES and any(m in reason for m in SCHEMA_RACE_MESSAGES):
                time.sleep(0.5 * (attempt + 1))
                continue
            raise SpecError(file, "storage", f"{shown}: cannot open it ({reason})") from None


class Reporter:
    """Trainer callback: keeps the run's curve (pgpong/sweep/spec.py::Curve), reports to Optuna
    every `report_every` units of progress, prunes when told.

    Progress is counted in episodes; for a time_to objective, in what it measures (episodes, agent
    steps or seconds), and the value reported is the running reward still to gain (threshold -
    running reward): at equal cost, the trial further from the threshold is the worse one. (Its
    cost so far would rank it the other way round: a better agent plays longer episodes.)
    """

    def __init__(self, trial, spec: Spec, step_offset: int, tracker):
        self.trial, self.spec, self.offset, self.tracker = trial, spec, step_offset, tracker
        self.curve, self.start = Curve(), time.monotonic()
        self.next_report = spec.report_every

    def __call__(self, episode: int, metrics: dict) -> None:
        import optuna
        spec, curve = self.spec, self.curve
        curve.add(metrics["episode/running_reward"], metrics["episode/length"], time.monotonic() - self.start)
        progress = curve.cost(spec.measure)[-1] if spec.objective == "time_to" else episode
        if progress < self.next_report:
            return
        step = self.offset + int(self.next_report)
        self.next_report += spec.report_every * (1 + (progress - self.next_report) // spec.report_every)
        value = spec.threshold - curve.running[-1] if spec.objective == "time_to" else spec.value(curve)
        self.trial.report(value, step)
        self.tracker.log_metrics({"trial/intermediate": value}, step=step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} (intermediate objective {value:+.3f})")


# ---- MLflow parent run shared by all workers of a study --------------------------------------

PARENT_SETTLE_S = 1.0    # seconds a created parent run waits for racing workers' runs to be stored


def study_parent_run(tracking_cfg, launch_dir, study_name: str, storage_id: str, tags: dict) -> str | None:
    """The study's parent run id: found by tags, or created; racing workers agree on the earliest."""
    if tracking_cfg.backend == "none":
        return None
    uri = resolve_sqlite_uri(tracking_cfg.uri, launch_dir, "tracking.uri")
    client = open_client(uri)
    filt = (f"tags.pgpong_kind = 'study' and tags.optuna_study = '{study_name}' "
            f"and tags.optuna_storage = '{storage_id}'")

    def candidates():
        return sorted(client.search_runs([exp], filt, max_results=50),
                      key=lambda r: (r.info.start_time, r.info.run_id))

    with faults(uri):     # e.g. a read-only mlflow.db: one line
        exp = retry_locked(experiment_id, client, tracking_cfg.experiment)
        found = candidates()
        if not found:
            mine = client.create_run(exp, run_name=f"study {study_name}", tags={k: str(v) for k, v in tags.items()})
            # a run is stamped (start_time) before it is stored: a worker that searched right after
            # storing its own could miss an earlier-stamped one still on its way and keep its own, so
            # wait until every run stamped before ours is visible, then all workers pick the same
            time.sleep(PARENT_SETTLE_S)
            found = candidates()
            if found[0].info.run_id != mine.info.run_id:    # another worker created one first: use it
                client.delete_run(mine.info.run_id)
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    return run_id


# ---- one trial -------------------------------------------------------------------------------

def train_seed(cfg, tracker, out_dir: Path, callbacks, skip_params=frozenset()) -> dict:
    """What `python -m pgpong.run` does for one run, minus Hydra: build envs, log params, train."""
    with start(cfg) as begun:
        return train_run(cfg, begun, tracker, out_dir, callbacks=callbacks, skip_params=skip_params)


class Objective:
    """optuna's objective: sample, train every seed with pruning, aggregate, track in MLflow."""

    def __init__(self, spec: Spec, base: list[str], n_trials: int, study_name: str, launch_dir: Path,
                 tracking_cfg, parent_run_id: str | None, out_root: Path):
        self.spec, self.base, self.n_trials, self.study_name = spec, base, n_trials, study_name
        self.launch_dir, self.tracking_cfg, self.parent_run_id, self.out_root = \
            launch_dir, tracking_cfg, parent_run_id, out_root

    def tracker(self, name: str, tags: dict, parent: str | None):
        if self.tracking_cfg.backend == "none":
            return NullTracker()
        return make_tracker(self.tracking_cfg, self.launch_dir, name, tags, parent)

    def __call__(self, trial) -> float:
        import optuna
        if trial.number >= self.n_trials:
            trial.set_user_attr("surplus", True)     # FAIL without training; MaxTrialsCallback then stops us
            raise SurplusTrial(f"trial {trial.number}: the study already has its {self.n_trials} trials")
        spec, start = self.spec, time.monotonic()
        sampled = {p.name: suggest(trial, p) for p in spec.params}
        overrides = self.base + [override(k, v) for k, v in sampled.items()]
        tags = {"pgpong_kind": "trial", "optuna_study": self.study_name, "optuna_trial": trial.number,
                "sweep_spec": spec.name, "hydra_overrides": " ".join(overrides), "worker": WORKER, "git_commit":
                naming.git_commit() or "unknown", naming.NOTE_TAG: f"Trial {trial.number} of Optuna study "
                f"`{self.study_name}`: " + ", ".join(f"`{k}={v}`" for k, v in sampled.items()) + f"; seeds {spec.seeds}."}
        trial_tracker = self.tracker(f"trial {trial.number}", tags, self.parent_run_id)
        if trial_tracker.run_id:
            trial.set_user_attr("mlflow_run_id", trial_tracker.run_id)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", WORKER)
        trial_tracker.log_params(sampled)
        single = len(spec.seeds) == 1
        state, values = "FAIL", []
        try:
            for j, seed in enumerate(spec.seeds):
                cfg = compose(overrides + [f"seed={seed}"])
                tracker = trial_tracker if single else self.tracker(
                    f"trial {trial.number} seed {seed}", {**tags, "pgpong_kind": "trial_seed", "seed": seed},
                    trial_tracker.run_id)
                reporter = Reporter(trial, spec, j * step_span(spec), trial_tracker)
                status = "FAILED"
                try:
                    train_seed(cfg, tracker, self.out_root / f"trial-{trial.number}" / f"seed-{seed}", [reporter],
                               skip_params=set(sampled) if single else set())
                    status = "FINISHED"
                except optuna.TrialPruned:
                    status = "KILLED"
                    raise
                finally:
                    if not single:
                        tracker.set_tags({"state": "PRUNED" if status == "KILLED" else status})
                        tracker.end(status)
                values.append(spec.value(reporter.curve))
                trial_tracker.log_metrics({f"trial/objective_seed_{seed}": values[-1]}, step=0)
                if spec.objective == "time_to":     # 0: censored (never passed the threshold)
                    passed = reached(reporter.curve.running, spec.threshold)
                    trial.set_user_attr(f"reached_seed_{seed}", passed)
                    trial_tracker.log_metrics({f"trial/reached_seed_{seed}": float(passed)}, step=0)
            value = aggregate(values, spec.aggregate)
            trial_tracker.log_metrics({"trial/objective": value}, step=0)
            state = "COMPLETE"
            return value
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except Exception as e:      # e.g. Diverged: this trial FAILs, the study goes on (catch= below)
            reason = str(e) if isinstance(e, PgpongError) else f"{type(e).__name__}: {e}"
            trial.set_user_attr("failure_reason", reason[:1000])
            trial_tracker.set_tags({"failure_reason": reason[:5000]})
            raise
        finally:
            elapsed = time.monotonic() - start
            trial.set_user_attr("duration_s", round(elapsed, 3))
            trial_tracker.log_metrics({"trial/duration_s": elapsed}, step=0)
            trial_tracker.set_tags({"state": state})
            trial_tracker.end({"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED"))


# ---- results ---------------------------------------------------------------------------------

def best_outputs(study, spec: Spec, base_for_run: list[str], out_dir: Path) -> tuple[str, str, list[Path]]:
    """The best trial as a `python -m pgpong.run` line and as YAML; files written to out_dir."""
    from optuna.trial import TrialState
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / "trials.csv"
    write_atomic(csv, study.trials_dataframe().to_csv(index=False))
    files = [csv]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "", "", files
    best = study.best_trial
    overrides = base_for_run + [override(k, v) for k, v in best.params.items()]
    line = "python -m pgpong.run " + " ".join(overrides)
    doc = {"study": study.study_name, "spec": str(spec.file), "trial": best.number, "objective": best.value,
           "direction": spec.direction, "params": dict(best.params), "overrides": overrides, "command": line}
    text = yaml.safe_dump(doc, sort_keys=False, width=10**6)
    write_atomic(out_dir / "best_params.yaml", text)
    write_atomic(out_dir / "best_override.txt", line + "\n")
    return line, text, files + [out_dir / "best_params.yaml", out_dir / "best_override.txt"]


def counts(study) -> dict:
    from collections import Counter
    c = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return {k: c.get(k, 0) for k in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}


# ---- entry point -----------------------------------------------------------------------------

def _is_file_or_dir(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):      # a name too long for the file system, a NUL byte
        return False


def check(argv: list[str], launch_dir: Path) -> dict:
    """The command line and its spec checked, nothing opened or written; SpecError/PgpongError on bad input."""
    args, extra = parse_args(argv)
    file = spec_path(args["sweep"], SWEEPS_DIR)
    if not file.is_absolute() and not _is_file_or_dir(file):
        file = resolve_path(file, launch_dir)
    if not _is_file_or_dir(file) and _is_file_or_dir(resolve_path(args["sweep"], launch_dir)):
        file = resolve_path(args["sweep"], launch_dir)          # a file or folder named as given
    if not _is_file_or_dir(file):
        raise SpecError(file, "sweep", f"sweep={args['sweep']}: no such spec; available: "
                        f"{', '.join(available(SWEEPS_DIR)) or '(none)'} in {SWEEPS_DIR}")
    spec = load_spec(file)
    for key in ("n_trials", "episodes"):
        if key in args:
            if not (args[key].isascii() and args[key].isdigit()) or int(args[key]) < 1:
                raise SpecError(file, key, f"{key}={args[key]}: must be a positive integer")
            setattr(spec, key, int(args[key]))
    if "episodes" in args and spec.report_every > spec.episodes:
        spec.report_every = max(1, spec.episodes // 2)
    study_name = args.get("study", spec.name)
    if not STUDY_NAME.fullmatch(study_name):
        raise SpecError(file, "study", f"study={study_name}: use letters, digits, '_', '.', '-'")
    names = {p.name for p in spec.params}
    for o in extra:
        key = o.lstrip("+~").partition("=")[0]
        if key in SET_BY_SWEEP or key in names:
            raise SpecError(file, key, f"{o}: set by the sweep itself (seeds, episodes, params in the spec)")
    base = spec.fixed + extra + [f"episodes={spec.episodes}"]
    if spec.objective == "time_to":     # a trial is done once it passes the threshold: its cost is known
        base.append(f"stop_at={spec.threshold!r}")
    check_params(spec, base)
    return {"spec": spec, "base": base, "extra": extra, "cfg": checked_cfg(file, "fixed", base),
            "study_name": study_name, "n_trials": spec.n_trials, "storage_url": args.get("storage", "sqlite:///optuna.db")}


def prepare(argv: list[str], launch_dir: Path) -> dict:
    """Everything checked and built before the first trial starts: `check`, the tracking server, the storage."""
    p = check(argv, launch_dir)
    file, cfg = p["spec"].file, p["cfg"]
    if cfg.tracking.backend != "none":
        try:
            check_store(resolve_sqlite_uri(cfg.tracking.uri, launch_dir, "tracking.uri"))
        except PgpongError as e:
            raise SpecError(file, "tracking.uri", str(e)) from None
    p["storage"], p["storage_id"] = make_storage(p["storage_url"], launch_dir, file)
    return p


def sweep(p: dict, launch_dir: Path) -> dict:
    """Run trials until the study holds n_trials; returns counts and the best trial's line."""
    import optuna
    spec, cfg, n_trials, study_name = p["spec"], p["cfg"], p["n_trials"], p["study_name"]
    try:
        study = optuna.create_study(study_name=study_name, storage=p["storage"], load_if_exists=True,
                                    direction=spec.direction, sampler=make_sampler(spec), pruner=make_pruner(spec))
    except Exception as e:
        raise SpecError(spec.file, "storage", f"{p['storage_id']}: {str(e).splitlines()[0]}") from None
    if study.direction.name.lower() != spec.direction:
        raise SpecError(spec.file, "direction", f"{spec.direction}: study {study_name!r} in this storage "
                        f"was created with {study.direction.name.lower()}; use another study=NAME")
    tags = {"pgpong_kind": "study", "optuna_study": study_name, "optuna_storage": p["storage_id"],
            "sweep_spec": spec.name, "git_commit": naming.git_commit() or "unknown",
            naming.NOTE_TAG: f"Optuna study `{study_name}` ({spec.description or spec.name}): one nested run per trial."}
    parent = study_parent_run(cfg.tracking, launch_dir, study_name, p["storage_id"], tags)
    parent_tracker = None
    if parent:
        # writes go to the shared run found above (resume_run_id continues a run instead of creating one)
        parent_tracker = make_tracker(cfg.tracking, launch_dir, f"study {study_name}", {}, resume_run_id=parent)
    out_root = launch_dir / "outputs" / "sweeps" / study_name
    already = sum(counts(study).values())
    if not already:
        for params in spec.enqueue:     # the spec's known points first (skipped if another worker queued them)
            study.enqueue_trial(params, skip_if_exists=True)
    print(f"pgpong: study {study_name!r} in {p['storage_id']}: {already} of {n_trials} trials exist"
          + (f"; MLflow parent run {parent}" if parent else ""), file=sys.stderr)
    objective = Objective(spec, p["base"], n_trials, study_name, launch_dir, cfg.tracking, parent, out_root)
    status = "FAILED"
    try:
        if already < n_trials:
            # states=None: count every trial, running ones too, so workers stop together at n_trials
            study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=None)],
                           catch=(Exception,), gc_after_trial=True)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        c = counts(study)
        run_base = spec.fixed + [o for o in p["extra"] if not o.lstrip("+~").startswith(("tracking", "hydra"))]
        line, text, files = best_outputs(study, spec, run_base, out_root)
        if parent_tracker is not None:
            try:
                parent_tracker.set_tags({f"trials_{k.lower()}": v for k, v in c.items()})
                if line:
                    parent_tracker.set_tags({"best_trial": study.best_trial.number, "best_value": study.best_value})
                    parent_tracker.log_metrics({"best_value": study.best_value}, step=len(study.trials))
                for f in [spec.file, *files]:
                    parent_tracker.log_artifact(f)
            except Exception as e:   # the study is safe in its storage; say what MLflow missed
                print(f"warning: MLflow parent run {parent}: summary not fully logged ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)
            finally:
                parent_tracker.end(status)
    print(f"pgpong: study {study_name!r}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed"
          f" ({sum(c.values())} trials)", file=sys.stderr)
    if line:
        print(f"best trial {study.best_trial.number}: objective {study.best_value:+.4f}\n{line}\n---\n{text}", end="")
    return {"counts": c, "line": line}


@entry_point
def main(argv: list[str] | None = None) -> int:
    launch_dir = Path(os.getcwd())
    sweep(prepare(sys.argv[1:] if argv is None else argv, launch_dir), launch_dir)
    return 0

