"""Compare training runs across seeds: curves, times to a running reward, verdicts, and the runs as data.

    python -m pgpong.report experiment=crop_fix              # every run of MLflow experiment crop_fix
    python -m pgpong.report sweep=<parent run id>             # the jobs of one sweep (parent run or sweep_id tag)
    python -m pgpong.report runs=a1b2,c3d4,e5f6               # explicit run ids (also --runs a,b / runs=[a,b])
    python -m pgpong.report tag=experiment=crop_fix           # runs with a tag (repeatable)
    python -m pgpong.report experiment=crop_fix filter="params.episodes = '500'"   # any MLflow filter too
    python -m pgpong.report from=docs/results/crop_fix/runs   # runs folders only, no MLflow
    python -m pgpong.report from=dirA,dirB experiment=crop_fix tracking.uri=sqlite:///a.db tracking.uri=sqlite:///b.db
    options: name=NAME (reports/NAME/), out=reports, tracking.uri=sqlite:///mlflow.db (repeatable)

Runs come from MLflow stores (a selection key above; each tracking.uri given) and from runs folders
(from=, comma-separated; a report folder's runs/ works too), merged by run id. Runs are grouped by
the params that differ between them, except the seed (and tracking and logging settings); each
group is one variant, its runs its seeds. Written atomically to <out>/<name>/: report.md,
groups.csv, times.csv, runs.csv, verdicts.txt, running_reward_vs_{episodes,hours,steps}.{png,svg}
and runs/<run_id>.{csv,json}, from which `from=<out>/<name>` rebuilds the same report. A report
of runs from one MLflow store is also logged there as a report run (tag pgpong.report=true).
The statistics are described in pgpong/report/stats.py and docs/report.md.
"""
import csv
import io
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pgpong import cliargs
from pgpong.errors import PgpongError, entry_point
from pgpong.paths import resolve_path, resolve_sqlite_uri
from pgpong.report import data
from pgpong.report.data import Run
from pgpong.report.stats import (
    MIN_SEEDS,
    OPTIONAL_THRESHOLDS,
    THRESHOLDS,
    Improvement,
    Median,
    censored_times,
    iqm_band,
    km_median,
    on_grid,
    probability_of_improvement,
    sooner_scores,
)
from pgpong.tracking import store
from pgpong.tracking.naming import NOT_IN_NAME, SPEED_ONLY

KEYS = ("experiment", "sweep", "runs", "tag", "filter", "from", "name", "out", "tracking.uri")
SELECT = ("experiment", "sweep", "runs", "tag", "filter")
DEFAULT_URI = "sqlite:///mlflow.db"
REPORT_TAG = "pgpong.report"
ENV_KEYS = ("env.id", "env.frameskip", "env.repeat_action_probability", "env.max_episode_steps")
NOT_A_VARIANT = ("seed", "episodes",     # the seed, and the budget: runs are compared over the episodes all reached
                 *SPEED_ONLY)            # e.g. the emulators' CPU priority: the same episodes, only sooner or later
DERIVED = ("D",)                          # follows from other params; only named when nothing else differs
GRID_POINTS = 200                         # points of the IQM curve and its band
PLOT_POINTS = 1000                        # points per thin seed line
POINTS = 21   # a Pong game ends at 21 points: episode rewards and their EMA lie in [-21, 21]


@dataclass(frozen=True)
class Measure:
    column: str       # the runs CSV column
    label: str        # words

    def fmt(self, v: float, unit: bool = True) -> str:
        """A time on this measure, with its unit: 1,234 episodes, 42.0 min / 3.20 h, 850k / 2.10M steps."""
        if v is None or np.isnan(v):
            return "–"
        if np.isinf(v):
            return "∞"
        if self.column == "seconds":
            return f"{v / 60:.1f} min" if v < 3600 else f"{v / 3600:,.2f} h"
        if self.column == "steps":
            return f"{v / 1e3:.1f}k steps" if v < 1e6 else f"{v / 1e6:,.2f}M steps"
        return f"{v:,.0f}" + (" episodes" if unit else "")

    def scale(self) -> tuple[float, str]:
        """(divisor, axis label) for plots."""
        return {"seconds": (3600.0, "wall-clock hours since the run started"),
                "steps": (1e6, "agent steps (millions)")}.get(self.column, (1.0, "episodes"))


EPISODES = Measure("episode", "episodes")
HOURS = Measure("seconds", "wall-clock")
STEPS = Measure("steps", "agent steps")
MEASURES = (EPISODES, HOURS, STEPS)


@dataclass
class Group:
    label: str
    runs: list = field(default_factory=list)


# ---------------------------------------------------------------- selection (MLflow reads)

def open_client(uri: str, launch_dir: Path):
    """An MlflowClient on the resolved URI; a missing SQLite file is an error, not a new empty store."""
    resolved = resolve_sqlite_uri(uri, launch_dir, "tracking.uri")
    return store.open_client(resolved, must_exist=True, writes=False), resolved


def search_all(client, experiment_ids: list[str], filter_string: str) -> list:
    """Every active run matching the filter (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _quote(v: str) -> str:
    return "'" + v.replace("'", "\\'") + "'"


def select_runs(client, args: dict) -> tuple[list, str]:
    """The training runs the arguments select, and a one-line description of the selection."""
    clauses, described = [], []
    if args.get("filter"):
        clauses.append(args["filter"])
        described.append(f"filter {args['filter']!r}")
    for t in args.get("tag", []):
        key, eq, value = t.partition("=")
        if not eq or not key:
            raise PgpongError(f"tag={t}: expected tag=KEY=VALUE")
        clauses.append(f"tags.`{key}` = {_quote(value)}")
        described.append(f"tag {key}={value}")

    if args.get("experiment"):
        exp_ids = []
        for name in cliargs.as_list(args["experiment"]):
            exp = client.get_experiment_by_name(name)
            if exp is None:
                known = ", ".join(e.name for e in client.search_experiments()) or "none"
                raise PgpongError(f"experiment={name}: no such MLflow experiment (known: {known})")
            exp_ids.append(exp.experiment_id)
        described.insert(0, f"MLflow experiment {args['experiment']}")
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]

    if args.get("runs"):
        ids = cliargs.as_list(args["runs"])
        if not ids:
            raise PgpongError("runs=: give run ids, e.g. runs=a1b2,c3d4")
        from mlflow.exceptions import MlflowException
        runs = []
        for rid in ids:
            try:
                runs.append(client.get_run(rid))
            except MlflowException:
                raise PgpongError(f"runs={args['runs']}: no run {rid} in this tracking store") from None
        described.insert(0, f"runs {','.join(ids)}")
        if clauses or args.get("experiment"):
            keep = {r.info.run_id for r in search_all(client, exp_ids, " and ".join(clauses))}
            runs = [r for r in runs if r.info.run_id in keep]
    elif args.get("sweep"):
        sid = args["sweep"]
        base = " and ".join(clauses)
        found = {}
        for clause in (f"tags.`mlflow.parentRunId` = {_quote(sid)}", f"tags.sweep_id = {_quote(sid)}"):
            for r in search_all(client, exp_ids, " and ".join(c for c in (base, clause) if c)):
                found[r.info.run_id] = r
        runs = list(found.values())
        described.insert(0, f"sweep {sid}")
    else:
        runs = search_all(client, exp_ids, " and ".join(clauses))

    runs = [r for r in runs if r.data.tags.get(REPORT_TAG) != "true"]
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    runs = [r for r in runs if r.info.run_id not in parents]            # sweep parents hold no curves
    if not runs:
        raise PgpongError(f"no training runs match ({'; '.join(described)}) in {client.tracking_uri}")
    return sorted(runs, key=lambda r: r.info.start_time or 0), "; ".join(described)


def load(args: dict, launch_dir: Path) -> tuple[list[Run], list[str], list]:
    """Runs from every MLflow store and runs folder the arguments name, merged by run id.

    Returns the runs, one line per source, and the MLflow clients used."""
    uris = args.get("tracking.uri") or []
    folders = cliargs.as_list(args["from"]) if args.get("from") else []
    selects = any(args.get(k) for k in SELECT)
    if args.get("from") is not None and not folders:
        raise PgpongError("from=: give runs folders, e.g. from=docs/results/crop_fix/runs")
    if not selects and not folders:
        raise PgpongError("nothing selected: give experiment=NAME, sweep=ID, runs=a,b,c, tag=KEY=VALUE, "
                          "filter=... (MLflow) or from=DIR (runs folders)")
    if selects and not uris:
        uris = [DEFAULT_URI]
    if uris and not selects:
        raise PgpongError("tracking.uri= needs a selection: experiment=, sweep=, runs=, tag= or filter=")
    runs, sources, clients = [], [], []
    for uri in uris:
        client, resolved = open_client(uri, launch_dir)
        selected, selection = select_runs(client, args)
        names = {}
        for r in selected:
            if r.info.experiment_id not in names:
                exp = client.get_experiment(r.info.experiment_id)
                names[r.info.experiment_id] = exp.name if exp else ""
        runs += [data.from_mlflow(client, r, resolved, names[r.info.experiment_id]) for r in selected]
        sources.append(f"{selection} in `{resolved}`: {len(selected)} runs")
        clients.append(client)
    for spelled in folders:
        found = data.read_runs(resolve_path(spelled, launch_dir), spelled)
        runs += found
        sources.append(f"runs folder `{spelled}`: {len(found)} runs")
    merged = data.merge(runs)
    if len(merged) < len(runs):
        sources.append(f"{len(runs) - len(merged)} duplicate run(s) merged by run id (kept the longest copy)")
    return sorted(merged, key=lambda r: (r.start_time, r.run_id)), sources, clients


# ---------------------------------------------------------------- grouping (pure)

def check_comparable(runs: list[Run]) -> None:
    """All runs must play the same environment."""
    for key in ENV_KEYS:
        values = {}
        for r in runs:
            values.setdefault(r.params.get(key, "(missing)"), []).append(r)
        if len(values) > 1:
            seen = ", ".join(f"{v} in {len(rs)} run(s)" for v, rs in values.items())
            raise PgpongError(f"runs are not comparable: {key} differs ({seen}); select runs of one environment")


def _varies(key: str) -> bool:
    top = key.split(".")[0]
    return key not in NOT_A_VARIANT and top not in NOT_IN_NAME and not key.startswith("env.resolved.")


def group_runs(runs: list[Run]) -> tuple[list[Group], list[str]]:
    """Runs grouped by the params that differ between them (seed aside); the differing keys."""
    keys = sorted({k for r in runs for k in r.params})
    differ = [k for k in keys if _varies(k) and len({r.params.get(k) for r in runs}) > 1]
    named = [k for k in differ if k not in DERIVED] or differ
    by_params: dict = {}
    for r in runs:
        by_params.setdefault(tuple(r.params.get(k) for k in differ), []).append(r)

    # label groups with the user's own overrides (crop=fix) when they tell the groups apart, each
    # naming a key or config group whose params differ, and none left to a default
    okeys = sorted({k for r in runs for k in r.overrides})
    odiffer = [k for k in okeys if len({r.overrides.get(k, "(default)") for r in runs}) > 1
               and any(d == k or d.startswith(k + ".") for d in differ)]
    olabels = [{", ".join(f"{k}={r.overrides.get(k, '(default)')}" for k in odiffer) for r in rs}
               for rs in by_params.values()]
    use_overrides = (odiffer and all(len(s) == 1 for s in olabels) and "(default)" not in str(olabels)
                     and len({next(iter(s)) for s in olabels}) == len(olabels))
    groups = []
    for (values, rs), ol in zip(by_params.items(), olabels):
        if use_overrides:
            label = next(iter(ol))
        elif named:
            label = ", ".join(f"{k}={v}" for k, v in zip(differ, values) if k in named)
        else:
            label = "all runs"
        groups.append(Group(label, sorted(rs, key=lambda r: (r.seed, r.run_id))))
    groups.sort(key=lambda g: g.label)
    return groups, (odiffer if use_overrides else named)


def shared_settings(runs: list[Run]) -> dict:
    """Params with one value across all runs (tracking, logging and env.resolved.* aside)."""
    keys = sorted({k for r in runs for k in r.params})
    return {k: runs[0].params.get(k) for k in keys
            if _varies(k) and len({r.params.get(k) for r in runs}) == 1}


# ---------------------------------------------------------------- statistics per group (pure)

def measures_of(runs: list[Run]) -> list[Measure]:
    """The time axes every run logged."""
    return [m for m in MEASURES if all(r.has(m.column) for r in runs)]


def thresholds_of(runs: list[Run]) -> list[float]:
    """THRESHOLDS, the optional ones only when some run reached them."""
    return [t for t in THRESHOLDS if t not in OPTIONAL_THRESHOLDS
            or any((r.curve["running_reward"] >= t).any() for r in runs)]


def _xy(r: Run, m: Measure) -> tuple[np.ndarray, np.ndarray]:
    x, y = r.curve[m.column], r.curve["running_reward"]
    ok = ~np.isnan(x)
    return x[ok], y[ok]


def times(g: Group, t: float, m: Measure) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: (time to t on measure m or its last time, reached?)."""
    return censored_times([_xy(r, m) for r in g.runs], t)


def horizon(runs: list[Run], m: Measure) -> float:
    """The shortest run's last time on measure m."""
    return min(float(_xy(r, m)[0][-1]) for r in runs)


def final_scores(g: Group, episode: float) -> np.ndarray:
    """Each seed's running reward at the given episode."""
    return np.array([on_grid(r.curve["episode"], r.curve["running_reward"], np.array([episode]))[0] for r in g.runs])


def summarize(g: Group, common_episode: float) -> dict:
    """One groups.csv row: seeds, budget, IQM running reward at the common episode, hours, speed."""
    iq, lo, hi = iqm_band(final_scores(g, common_episode)[:, None])
    hours = [_xy(r, HOURS)[0][-1] / 3600 if r.has("seconds") else np.nan for r in g.runs]
    speed = [r.curve["steps"][-1] / r.curve["seconds"][-1] if r.has("steps") and r.has("seconds")
             and r.curve["seconds"][-1] > 0 else np.nan for r in g.runs]
    return {"group": g.label, "seeds": len(g.runs), "episodes_min": min(r.episodes for r in g.runs),
            "episodes_max": max(r.episodes for r in g.runs), "at_episode": int(common_episode),
            "running_iqm": float(iq[0]), "running_low": float(lo[0]), "running_high": float(hi[0]),
            "hours_median": float(np.nanmedian(hours)) if not np.isnan(hours).all() else np.nan,
            "steps_per_s_median": float(np.nanmedian(speed)) if not np.isnan(speed).all() else np.nan}


def time_table(groups: list[Group], thresholds, measures) -> list[dict]:
    """times.csv rows: per threshold, group and measure, the Kaplan-Meier median and its interval."""
    rows = []
    for t in thresholds:
        for g in groups:
            for m in measures:
                med = km_median(*times(g, t, m))
                rows.append({"threshold": t, "group": g.label, "measure": m.column, "seeds": med.n,
                             "reached": med.reached, "median": med.median, "low": med.low, "high": med.high})
    return rows


# ---------------------------------------------------------------- verdicts (pure)

def _ci(v: Improvement) -> str:
    return f"{v.p:.2f} [{v.low:.2f}, {v.high:.2f}]"


def _median(med: Median, m: Measure) -> str:
    """`1,020 [900, 1,200]` (episodes: the unit follows the pair) or `2.42 h [2.20 h, 2.64 h]`."""
    unit = m is not EPISODES
    return f"{m.fmt(med.median, unit)} [{m.fmt(med.low, unit)}, {m.fmt(med.high, unit)}]"


def _verdict_word(v: Improvement) -> str:
    return v.verdict + (f" ({v.reason})" if v.reason else "")


def time_verdict(a: Group, b: Group, t: float, measures, medians: dict) -> tuple[str, dict]:
    """One line: does a reach running reward t sooner than b, by each measure? And the numbers.

    medians: {(t, group label, measure column): Median}, as time_table computed them."""
    parts, found = [], {}
    for m in measures:
        (ta, ra), (tb, rb) = times(a, t, m), times(b, t, m)
        ma, mb = medians[(t, a.label, m.column)], medians[(t, b.label, m.column)]
        h = horizon(a.runs + b.runs, m)
        if not ((ra & (ta <= h)).any() or (rb & (tb <= h)).any()):
            v = Improvement(0.5, 0.5, 0.5, "cannot tell", f"no seed got there within {m.fmt(h)}")
        else:
            v = probability_of_improvement(sooner_scores(ta, ra, h), sooner_scores(tb, rb, h))
        found[m.column] = v
        parts.append(f"{m.label}: median {_median(ma, m)} vs {_median(mb, m)}{' episodes' if m is EPISODES else ''} "
                     f"(reached by {ma.reached}/{ma.n} vs {mb.reached}/{mb.n} seeds), "
                     f"P({a.label} sooner within {m.fmt(h)}) = {_ci(found[m.column])}: {_verdict_word(v)}")
    head = found[EPISODES.column]
    said = {"better": f"{a.label} reaches {t:+g} sooner than {b.label}",
            "worse": f"{b.label} reaches {t:+g} sooner than {a.label}",
            "cannot tell": f"cannot tell which of {a.label}, {b.label} reaches {t:+g} sooner"}[head.verdict]
    return f"running reward {t:+g}: {said} (by episodes). " + "; ".join(parts) + ".", found


def final_verdict(a: Group, b: Group, episode: float, rows: dict) -> tuple[str, Improvement]:
    """One line: is a's running reward at the common episode higher than b's? rows: groups.csv rows by label."""
    v = probability_of_improvement(final_scores(a, episode), final_scores(b, episode))
    ia, la, ha = (rows[a.label][k] for k in ("running_iqm", "running_low", "running_high"))
    ib, lb, hb = (rows[b.label][k] for k in ("running_iqm", "running_low", "running_high"))
    said = {"better": f"{a.label} is higher", "worse": f"{b.label} is higher",
            "cannot tell": "cannot tell which is higher"}[v.verdict]
    return (f"running reward at episode {episode:,.0f} (the shortest run): {said}. IQM {ia:+.2f} [{la:+.2f}, {ha:+.2f}] "
            f"vs {ib:+.2f} [{lb:+.2f}, {hb:+.2f}] (95% bootstrap CI), P({a.label} higher) = {_ci(v)}: "
            f"{_verdict_word(v)}."), v


# ---------------------------------------------------------------- outputs (files)

def _n(x, digits: int = 0) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:,.{digits}f}"


def groups_markdown(rows: list[dict]) -> str:
    head = ["group", "seeds", "episodes", f"running reward at episode {rows[0]['at_episode']:,}: IQM [95% CI]",
            "wall-clock (median)", "agent steps/s (median)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        eps = _n(row["episodes_min"]) if row["episodes_min"] == row["episodes_max"] else \
            f"{_n(row['episodes_min'])}..{_n(row['episodes_max'])}"
        lines.append("| " + " | ".join([
            row["group"], str(row["seeds"]), eps,
            f"{row['running_iqm']:+.2f} [{row['running_low']:+.2f}, {row['running_high']:+.2f}]",
            HOURS.fmt(row["hours_median"] * 3600), _n(row["steps_per_s_median"])]) + " |")
    return "\n".join(lines) + "\n"


def times_markdown(rows: list[dict], measures) -> str:
    head = ["running reward", "group", "reached"] + [f"{m.label}: median [95% CI]" for m in measures]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by = {(r["threshold"], r["group"], r["measure"]): r for r in rows}
    for t, g in dict.fromkeys((r["threshold"], r["group"]) for r in rows):
        cells = []
        for m in measures:
            r = by[(t, g, m.column)]
            cells.append(f"{m.fmt(r['median'], False)} [{m.fmt(r['low'], False)}, {m.fmt(r['high'], False)}]")
        first = by[(t, g, measures[0].column)]
        lines.append("| " + " | ".join([f"{t:+g}", g, f"{first['reached']}/{first['seeds']}"] + cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if isinstance(v, float) and np.isnan(v) else
                        "inf" if isinstance(v, float) and np.isinf(v) else
                        f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def runs_rows(groups: list[Group], thresholds, measures) -> list[dict]:
    """runs.csv: one row per run with its provenance and its crossings (blank: never)."""
    rows = []
    for g in groups:
        for r in g.runs:
            row = {"run_id": r.run_id, "group": g.label, "seed": r.seed, "status": r.status,
                   "episodes": r.episodes, "git_commit": r.commit, "start_time": r.start_time}
            for t in thresholds:
                for m in measures:
                    (x,), (hit,) = censored_times([_xy(r, m)], t)
                    row[f"to_{t:+g}_{m.column}"] = float(x) if hit else np.nan
            row["final_running_reward"] = float(r.curve["running_reward"][-1])
            row["name"] = r.name
            rows.append(row)
    return rows


def plot(groups: list[Group], m: Measure, out_base: Path, title: str, thresholds) -> None:
    """Running reward vs a measure: thin seed lines, bold IQM, its 95% bootstrap band; PNG and SVG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams["svg.fonttype"] = "none"     # text as text: smaller, searchable SVG
    plt.rcParams["svg.hashsalt"] = "pgpong"   # the same ids every time: a rebuilt SVG diffs only where it changed
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, g in enumerate(groups):
        color = f"C{i}"
        xys = [_xy(r, m) for r in g.runs]
        thin = min(0.5, max(0.12, 1.5 / len(g.runs)))      # 2 seeds stay visible, 10 stay a haze
        div, xlabel = m.scale()
        for x, y in xys:
            step = max(1, len(x) // PLOT_POINTS)
            ax.plot(x[::step] / div, y[::step], color=color, lw=0.6, alpha=thin)
        start, end = max(float(x[0]) for x, _ in xys), min(float(x[-1]) for x, _ in xys)
        grid = np.linspace(start, end, GRID_POINTS) if end > start else np.array([end])
        mid, lo, hi = iqm_band(np.vstack([on_grid(x, y, grid) for x, y in xys]))
        ax.plot(grid / div, mid, color=color, lw=2.0, label=f"{g.label} ({len(g.runs)} seeds)")
        if len(g.runs) > 1:
            ax.fill_between(grid / div, lo, hi, color=color, alpha=0.2, lw=0)
    for t in thresholds:
        ax.axhline(t, color="0.6", lw=0.5, ls=":")
    ax.set_ylim(-POINTS - 0.5, POINTS + 0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("running reward (EMA 0.99 of episode reward)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8, title="bold: IQM across seeds, band: its 95% bootstrap CI; thin: seeds",
              title_fontsize=7)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    fig.savefig(out_base.with_suffix(".png"), dpi=120)
    fig.savefig(out_base.with_suffix(".svg"), metadata={"Date": None})
    plt.close(fig)


PLOTS = {"episode": "running_reward_vs_episodes", "seconds": "running_reward_vs_hours", "steps": "running_reward_vs_steps"}


def write_atomically(target: Path, build) -> None:
    """Build the report in a temporary folder beside target, then swap it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)     # mkdtemp makes it private; a report folder is for reading
    old = None
    try:
        build(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def default_name(args: dict) -> str:
    if args.get("name"):
        name = args["name"]
    elif args.get("experiment"):
        name = args["experiment"].replace(",", "+")
    elif args.get("sweep"):
        name = f"sweep-{args['sweep'][:8]}"
    elif args.get("runs"):
        ids = cliargs.as_list(args["runs"])
        name = f"runs-{ids[0][:8]}-{len(ids)}" if ids else "runs"
    elif args.get("tag"):
        name = "tag-" + "-".join(args["tag"])
    elif args.get("from"):
        first = Path(cliargs.as_list(args["from"])[0].rstrip("/"))
        name = first.parent.name if first.name == "runs" and first.parent.name else first.name
    else:
        name = "report"
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-.")
    if not name:
        raise PgpongError(f"name={args.get('name')}: give a name made of letters, digits, . _ + -")
    return name


def _short(commit: str) -> str:
    """`e45d236415c1` or `e45d236415c1-dirty` from a full commit id."""
    head, dirty = (commit[:-6], "-dirty") if commit.endswith("-dirty") else (commit, "")
    return head[:12] + dirty


def _env(r: Run) -> str:
    p = r.params
    return (f"{p.get('env.resolved.id', p.get('env.id'))}, frameskip {p.get('env.resolved.frameskip', p.get('env.frameskip'))}, "
            f"sticky {p.get('env.resolved.repeat_action_probability', p.get('env.repeat_action_probability'))}, "
            f"max {p.get('env.resolved.max_episode_steps', p.get('env.max_episode_steps'))} steps, "
            f"{p.get('env.resolved.num_envs', p.get('env.num_envs', '?'))} envs; "
            f"ale-py {p.get('env.resolved.ale_py', '?')}, gymnasium {p.get('env.resolved.gymnasium', '?')}")


def build_report(groups: list[Group], differ: list[str], sources: list[str], command: str, name: str) -> dict:
    """Everything but the plots: tables, verdicts, and the files' text."""
    runs = [r for g in groups for r in g.runs]
    thresholds, measures = thresholds_of(runs), measures_of(runs)
    common = horizon(runs, EPISODES)
    group_rows = [summarize(g, common) for g in groups]
    time_rows = time_table(groups, thresholds, measures)
    medians = {(r["threshold"], r["group"], r["measure"]): Median(r["median"], r["low"], r["high"], r["reached"], r["seeds"])
               for r in time_rows}
    by_label = {r["group"]: r for r in group_rows}
    verdicts, found = [], {}
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            a, b = groups[i], groups[j]
            for t in thresholds:
                line, found[(a.label, b.label, t)] = time_verdict(a, b, t, measures, medians)
                verdicts.append(line)
            line, found[(a.label, b.label, "final")] = final_verdict(a, b, common, by_label)
            verdicts.append(line)
    if len(groups) == 1:
        verdicts.append("one group only (the runs differ in nothing but the seed): nothing to compare.")
    not_finished = [r for r in runs if r.status != "FINISHED"]
    settings = shared_settings(runs)
    md = [f"# Report: {name}", "", f"Command: `{command}`  ", "Runs from: " + "; ".join(sources) + ".  ",
          f"{len(runs)} runs in {len(groups)} group(s)"
          + (f", differing in {', '.join(differ)}" if differ and len(groups) > 1 else "") + ".", ""]
    if not_finished:
        md += [f"Note: {len(not_finished)} run(s) not FINISHED ("
               + ", ".join(f"{r.name}: {r.status}" for r in not_finished) + "); their curves end early.", ""]
    md += [f"![running reward vs {m.label}]({PLOTS[m.column]}.png)" + "\n" for m in measures]
    md += ["Thin lines: each seed. Bold: the interquartile mean (IQM) across seeds; band: its 95% stratified-"
           "bootstrap interval (rliable), drawn where every seed of the group has data.", "",
           "## Groups", "", groups_markdown(group_rows),
           "## Time to a running reward", "",
           "Kaplan-Meier median over seeds with its 95% interval (lifelines); a seed that never got there counts "
           "as 'later than its last point' (right-censored), so ∞ means fewer than half the seeds got there "
           "(or the interval is not bounded by the data). Wall-clock: since the run started; agent steps: "
           "summed length of the finished episodes.", "", times_markdown(time_rows, measures),
           "## Verdicts", "",
           "P(X sooner) and P(X higher) are rliable's probability of improvement (over all pairs of seeds, ties "
           "half) with 95% stratified-bootstrap intervals: better when the interval lies above 0.5, worse when "
           f"below, else cannot tell; no verdict with fewer than {MIN_SEEDS} seeds in a group. 'Sooner' is judged "
           "within the shortest run of the two groups; seeds that did not get there by then tie.", ""]
    md += [f"- {v}" for v in verdicts] + [""]
    md += ["## Runs", "", "Settings shared by every run: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".", "",
           "| group | seed | run | status | episodes | commit | overrides | environment |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {g.label} | {r.seed} | `{r.run_id}` | {r.status} | {r.episodes:,} | `{_short(r.commit)}` | "
           f"`{r.tags.get('hydra_overrides', '')}` | {_env(r)} |" for g in groups for r in g.runs] + [""]
    md += ["Each run's curve and everything that produced it (all params, tags, source) are in "
           "`runs/<run id>.csv` and `runs/<run id>.json`.", ""]
    files = {"report.md": "\n".join(md), "groups.csv": to_csv(group_rows), "times.csv": to_csv(time_rows),
             "runs.csv": to_csv(runs_rows(groups, thresholds, measures)), "verdicts.txt": "\n".join(verdicts) + "\n"}
    return {"groups_rows": group_rows, "time_rows": time_rows, "verdicts": verdicts, "found": found,
            "files": files, "thresholds": thresholds, "measures": measures}


def log_report_run(client, groups: list[Group], name: str, folder: Path, sources: list[str], command: str) -> str:
    """A report run holding the report's files; in the runs' experiment when they share one."""
    from pgpong.tracking.tracker import experiment_id
    exps = {r.experiment_id for g in groups for r in g.runs}
    exp_id = exps.pop() if len(exps) == 1 and "" not in exps else experiment_id(client, "reports")
    ids = ",".join(r.run_id for g in groups for r in g.runs)
    run = client.create_run(exp_id, run_name=f"report:{name}", tags={
        REPORT_TAG: "true", "pgpong.report.selection": "; ".join(sources)[:5000],
        "pgpong.report.command": command[:5000], "pgpong.report.runs": ids[:5000]})
    try:
        from mlflow.entities import Param
        client.log_batch(run.info.run_id, params=[
            Param("runs", str(sum(len(g.runs) for g in groups))), Param("groups", " | ".join(g.label for g in groups)[:6000])])
        client.log_artifacts(run.info.run_id, str(folder))
        client.set_terminated(run.info.run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    return run.info.run_id


def report(argv: list[str], launch_dir: Path | None = None) -> dict:
    """Load, group, compute, write, log; returns what was written."""
    args = cliargs.parse(argv, KEYS, repeatable=("tag", "tracking.uri"), usage=__doc__)
    launch_dir = Path(launch_dir or os.getcwd())
    name = default_name(args)
    runs, sources, clients = load(args, launch_dir)
    check_comparable(runs)
    groups, differ = group_runs(runs)
    command = "python -m pgpong.report " + " ".join(argv)
    out = build_report(groups, differ, sources, command, name)
    target = resolve_path(args.get("out", "reports"), launch_dir) / name

    def build(folder: Path) -> None:
        for fname, text in out["files"].items():
            (folder / fname).write_text(text)
        for m in out["measures"]:
            plot(groups, m, folder / PLOTS[m.column], f"{name}: running reward vs {m.label}", out["thresholds"])
        data.write_runs(runs, folder / "runs")

    write_atomically(target, build)
    from_one_store = len(clients) == 1 and not args.get("from")
    report_run = None
    if from_one_store:
        try:
            with store.faults(clients[0].tracking_uri):
                report_run = log_report_run(clients[0], groups, name, target, sources, command)
        except PgpongError as e:
            raise PgpongError(f"{e}; the report is in {target} but not logged as a report run") from None
    return {"dir": target, "run_id": report_run, "groups": groups, "markdown": out["files"]["report.md"], **out}


@entry_point
def main(argv: list[str] | None = None) -> int:
    out = report(sys.argv[1:] if argv is None else argv)
    print(groups_markdown(out["groups_rows"]))
    print(times_markdown(out["time_rows"], out["measures"]))
    print("\n".join(f"- {v}" for v in out["verdicts"]))
    logged = f" (MLflow report run {out['run_id']})" if out["run_id"] else ""
    print(f"\npgpong: report -> {out['dir']}{logged}", file=sys.stderr)
    return 0
