"""Compare training runs from MLflow across seeds: curves, a table, and a verdict per threshold.

    python -m pgpong.report experiment=crop_fix            # every run of MLflow experiment crop_fix
    python -m pgpong.report sweep=<parent run id>           # the jobs of one sweep (parent run or sweep_id tag)
    python -m pgpong.report runs=a1b2,c3d4,e5f6             # explicit run ids (also --runs a,b / runs=[a,b])
    python -m pgpong.report tag=experiment=crop_fix         # runs with a tag (repeatable)
    python -m pgpong.report experiment=crop_fix filter="params.episodes = '500'"   # any MLflow filter too
    options: name=NAME (reports/NAME/), out=reports, tracking.uri=sqlite:///mlflow.db, alpha=0.05

Runs are grouped by the params that differ between them, except the seed (and tracking and
logging settings); each group is one variant, its runs its seeds. Written atomically to
reports/<name>/ (report.md, table.csv, runs.csv, running_reward_vs_{episodes,hours}.{png,svg})
and logged as the artifacts of a report run (tag pgpong.report=true) in MLflow.
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
from pgpong.errors import PgpongError
from pgpong.paths import resolve_path, resolve_sqlite_uri
from pgpong.report.stats import (
    THRESHOLDS,
    band,
    compare_times,
    first_crossing,
    mean_sd,
    on_grid,
    welch,
)
from pgpong.tracking.naming import NOT_IN_NAME

KEYS = ("experiment", "sweep", "runs", "tag", "filter", "name", "out", "tracking.uri", "alpha")
RUNNING = "episode/running_reward"
REWARD = "episode/reward"
SPEED = "time/steps_per_s"
REPORT_TAG = "pgpong.report"
ENV_KEYS = ("env.id", "env.frameskip", "env.repeat_action_probability", "env.max_episode_steps")
NOT_A_VARIANT = ("seed",)                 # params that differ between seeds of one variant
DERIVED = ("D",)                          # follows from other params; only named when nothing else differs
PLOT_POINTS = 1000


@dataclass
class RunData:
    run_id: str
    name: str
    status: str
    seed: str
    params: dict
    overrides: dict
    episodes: np.ndarray        # (N,) episode index of each point
    running: np.ndarray         # (N,) running reward
    hours: np.ndarray           # (N,) wall-clock hours since the run started
    rewards: np.ndarray         # (M,) episode rewards
    steps_per_s: float
    wall_hours: float
    experiment_id: str


@dataclass
class Group:
    label: str
    runs: list = field(default_factory=list)


# ---------------------------------------------------------------- selection (MLflow reads)

def open_client(uri: str, launch_dir: Path):
    """An MlflowClient on the resolved URI; a missing SQLite file is an error, not a new empty store."""
    from mlflow.tracking import MlflowClient
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        path = path if path.is_absolute() else launch_dir / path
        if not path.is_file():
            raise PgpongError(f"tracking.uri={uri}: no such MLflow database ({path}); run from the directory "
                              "you trained in or pass tracking.uri=sqlite:////abs/path/mlflow.db")
    resolved = resolve_sqlite_uri(uri, launch_dir, "tracking.uri")
    return MlflowClient(tracking_uri=resolved), resolved


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
    elif clauses or args.get("experiment"):
        runs = search_all(client, exp_ids, " and ".join(clauses))
    else:
        raise PgpongError("nothing selected: give experiment=NAME, sweep=ID, runs=a,b,c, tag=KEY=VALUE or filter=...")

    runs = [r for r in runs if r.data.tags.get(REPORT_TAG) != "true"]
    parents = {r.data.tags.get("mlflow.parentRunId") for r in runs}
    runs = [r for r in runs if r.info.run_id not in parents]            # sweep parents hold no curves
    if not runs:
        raise PgpongError(f"no training runs match ({'; '.join(described)}) in {client.tracking_uri}")
    return sorted(runs, key=lambda r: r.info.start_time or 0), "; ".join(described)


def parse_overrides(text: str | None) -> dict:
    """`crop=fix seed=1 episodes=500` -> {'crop': 'fix', 'episodes': '500'} (no seed, no tracking)."""
    out = {}
    for o in (text or "").split():
        key, eq, value = o.lstrip("+~").partition("=")
        if eq and key != "seed" and key.split(".")[0].split("/")[0] not in NOT_IN_NAME:
            out[key] = value
    return out


def history(client, run_id: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, values, timestamps_ms) of one metric, sorted by step (last write wins on ties)."""
    points = client.get_metric_history(run_id, key)
    if not points:
        return np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64)
    arr = np.array([(m.step, m.value, m.timestamp) for m in points], dtype=float)
    arr = arr[np.lexsort((arr[:, 2], arr[:, 0]))]
    keep = np.r_[arr[1:, 0] != arr[:-1, 0], True]
    arr = arr[keep]
    return arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2].astype(np.int64)


def load_run(client, run) -> RunData:
    """A training run's curves and speed; PgpongError when it has no episode metric."""
    rid, name = run.info.run_id, run.info.run_name or run.info.run_id
    steps, running, ts = history(client, rid, RUNNING)
    if steps.size == 0:
        raise PgpongError(f"run {rid} ({name}): no {RUNNING} metric, so it is not comparable; "
                          "select pgpong training runs only")
    _, rewards, _ = history(client, rid, REWARD)
    start = run.info.start_time or int(ts[0])
    end = run.info.end_time or int(ts[-1])
    return RunData(
        run_id=rid, name=name, status=run.info.status, seed=run.data.params.get("seed", run.data.tags.get("seed", "?")),
        params=dict(run.data.params), overrides=parse_overrides(run.data.tags.get("hydra_overrides")),
        episodes=steps, running=running, hours=(ts - start) / 3.6e6, rewards=rewards,
        steps_per_s=float(run.data.metrics.get(SPEED, float("nan"))), wall_hours=(end - start) / 3.6e6,
        experiment_id=run.info.experiment_id)


# ---------------------------------------------------------------- grouping (pure)

def check_comparable(runs: list[RunData]) -> None:
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


def group_runs(runs: list[RunData]) -> tuple[list[Group], list[str]]:
    """Runs grouped by the params that differ between them (seed aside); the differing keys."""
    keys = sorted({k for r in runs for k in r.params})
    differ = [k for k in keys if _varies(k) and len({r.params.get(k) for r in runs}) > 1]
    named = [k for k in differ if k not in DERIVED] or differ
    by_params: dict = {}
    for r in runs:
        by_params.setdefault(tuple(r.params.get(k) for k in differ), []).append(r)

    # label groups with the user's own overrides (crop=fix) when they tell the groups apart
    okeys = sorted({k for r in runs for k in r.overrides})
    odiffer = [k for k in okeys if len({r.overrides.get(k, "(default)") for r in runs}) > 1]
    olabels = [{", ".join(f"{k}={r.overrides.get(k, '(default)')}" for k in odiffer) for r in rs}
               for rs in by_params.values()]
    use_overrides = odiffer and all(len(s) == 1 for s in olabels) and len({next(iter(s)) for s in olabels}) == len(olabels)
    groups = []
    for (values, rs), ol in zip(by_params.items(), olabels):
        if use_overrides:
            label = next(iter(ol))
        elif named:
            label = ", ".join(f"{k}={v}" for k, v in zip(differ, values) if k in named)
        else:
            label = "all runs"
        groups.append(Group(label, sorted(rs, key=lambda r: r.seed)))
    groups.sort(key=lambda g: g.label)
    return groups, (odiffer if use_overrides else named)


# ---------------------------------------------------------------- statistics per group (pure)

def crossings(g: Group, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: (episode it reached the threshold or its last episode, reached?)."""
    x, obs = [], []
    for r in g.runs:
        e = first_crossing(r.episodes, r.running, threshold)
        x.append(e if e is not None else int(r.episodes[-1]))
        obs.append(e is not None)
    return np.asarray(x, float), np.asarray(obs, bool)


def summarize(g: Group, thresholds=THRESHOLDS) -> dict:
    """One table row: seeds, budget, episodes to each threshold, final values, time and speed."""
    row = {"group": g.label, "seeds": len(g.runs),
           "episodes_min": int(min(r.episodes[-1] for r in g.runs)),
           "episodes_max": int(max(r.episodes[-1] for r in g.runs))}
    for t in thresholds:
        x, obs = crossings(g, t)
        m, s = mean_sd(x[obs])
        row[f"to_{t:+g}_mean"], row[f"to_{t:+g}_sd"], row[f"to_{t:+g}_reached"] = m, s, int(obs.sum())
    for key, values in (("final", [r.running[-1] for r in g.runs]),
                        ("last100", [r.rewards[-100:].mean() if r.rewards.size else np.nan for r in g.runs]),
                        ("hours", [r.wall_hours for r in g.runs]),
                        ("steps_per_s", [r.steps_per_s for r in g.runs])):
        row[f"{key}_mean"], row[f"{key}_sd"] = mean_sd(values)
    return row


def _n(x: float, digits: int = 0) -> str:
    return "–" if x is None or np.isnan(x) else f"{x:,.{digits}f}"


def _pm(m: float, s: float, digits: int = 0) -> str:
    return _n(m, digits) if np.isnan(s) else f"{_n(m, digits)} ± {_n(s, digits)}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def threshold_cell(row: dict, t: float) -> str:
    k = row[f"to_{t:+g}_reached"]
    if k == 0:
        return f"never (0/{row['seeds']})"
    return f"{_pm(row[f'to_{t:+g}_mean'], row[f'to_{t:+g}_sd'])} ({k}/{row['seeds']})"


def verdict(a: Group, b: Group, t: float, alpha: float) -> str:
    """One plain-language line: does b differ from a in episodes to threshold t beyond seed spread?"""
    ax, aobs = crossings(a, t)
    bx, bobs = crossings(b, t)

    def said(g, x, obs):
        k, n = int(obs.sum()), len(obs)
        if k == 0:
            return f"{g.label} never did (0/{n} seeds within {_n(x.max())} episodes)"
        m, s = mean_sd(x[obs])
        missing = f"; {n - k} never did within {_n(x[~obs].max())}" if k < n else ""
        return f"{g.label} in {_pm(m, s)} episodes ({k}/{n} seeds{missing})"

    head = f"running reward {t:+g}: {said(a, ax, aobs)}, {said(b, bx, bobs)}"
    c = compare_times(ax, aobs, bx, bobs)
    if c.test == "none":
        return f"{head} — no comparison: {c.reason}."
    sooner = {"a": b.label, "b": a.label}.get(c.later)
    if c.test == "welch":
        gap, (lo, hi) = abs(c.diff), (c.ci if c.diff >= 0 else (-c.ci[1], -c.ci[0]))
        said_gap = (f"{sooner} gets there {_n(gap)} episodes sooner on average (95% CI of the gap [{_n(lo)}, {_n(hi)}])"
                    if sooner else "the means are equal")
        where = "larger than" if c.p < alpha else "within"
        return f"{head} — {said_gap}: {where} the seed-to-seed spread (Welch t-test {_p(c.p)})."
    test = f"Gehan censored rank test, exact permutation {_p(c.p)}"
    if c.p < alpha:
        return f"{head} — {sooner} gets there sooner, by more than the seed-to-seed spread ({test})."
    if c.min_p >= alpha:
        return (f"{head} — cannot tell with this many seeds: seeds that never got there count as 'later than "
                f"their last episode', and with {len(ax)} + {len(bx)} seeds the smallest possible p is "
                f"{c.min_p:.2f} ({test}); run more seeds or a longer budget.")
    return f"{head} — not larger than the seed-to-seed spread ({test})."


def final_verdict(a: Group, b: Group, alpha: float) -> str:
    """The same question for the final running reward (Welch)."""
    fa, fb = [r.running[-1] for r in a.runs], [r.running[-1] for r in b.runs]
    head = (f"final running reward: {a.label} {_pm(*mean_sd(fa), 2)}, {b.label} {_pm(*mean_sd(fb), 2)}")
    c = welch(fa, fb)
    if c.test == "none":
        return f"{head} — no comparison: {c.reason}."
    where = "larger than" if c.p < alpha else "within"
    return (f"{head} — the difference, {c.diff:+.2f} (95% CI [{c.ci[0]:+.2f}, {c.ci[1]:+.2f}]), is {where} "
            f"the seed-to-seed spread (Welch t-test {_p(c.p)}).")


# ---------------------------------------------------------------- outputs (files)

def table_markdown(rows: list[dict], thresholds=THRESHOLDS) -> str:
    head = (["group", "seeds", "episodes"] + [f"episodes to {t:+g}" for t in thresholds]
            + ["final running reward", "mean reward, last 100", "wall-clock h", "steps/s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        eps = _n(row["episodes_min"]) if row["episodes_min"] == row["episodes_max"] else \
            f"{_n(row['episodes_min'])}..{_n(row['episodes_max'])}"
        cells = ([row["group"], str(row["seeds"]), eps] + [threshold_cell(row, t) for t in thresholds]
                 + [_pm(row["final_mean"], row["final_sd"], 2), _pm(row["last100_mean"], row["last100_sd"], 2),
                    _pm(row["hours_mean"], row["hours_sd"], 2), _pm(row["steps_per_s_mean"], row["steps_per_s_sd"])])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()})
    return buf.getvalue()


def runs_csv(groups: list[Group], thresholds=THRESHOLDS) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run_id", "run_name", "group", "seed", "status", "episodes"]
               + [f"to_{t:+g}" for t in thresholds] + ["final_running_reward", "wall_hours", "steps_per_s"])
    for g in groups:
        for r in g.runs:
            cross = [first_crossing(r.episodes, r.running, t) for t in thresholds]
            w.writerow([r.run_id, r.name, g.label, r.seed, r.status, int(r.episodes[-1])]
                       + ["" if c is None else c for c in cross]
                       + [f"{r.running[-1]:.4f}", f"{r.wall_hours:.4f}", f"{r.steps_per_s:.1f}"])
    return buf.getvalue()


POINTS = 21   # a Pong game ends at 21 points: episode rewards and their EMA lie in [-21, 21]


def plot(groups: list[Group], x_of: str, out_base: Path, title: str, thresholds=THRESHOLDS) -> None:
    """Running reward vs episodes or hours: thin seed lines, group mean, 95% band; PNG and SVG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams["svg.fonttype"] = "none"     # text as text: smaller, searchable SVG
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, g in enumerate(groups):
        color = f"C{i}"
        xs = [r.episodes if x_of == "episodes" else r.hours for r in g.runs]
        end = min(float(x[-1]) for x in xs)
        start = max(float(x[0]) for x in xs)
        grid = np.linspace(start, end, PLOT_POINTS) if end > start else np.array([end])
        curves = np.vstack([on_grid(x, r.running, grid) for x, r in zip(xs, g.runs)])
        for x, r in zip(xs, g.runs):
            step = max(1, len(x) // PLOT_POINTS)
            ax.plot(x[::step], r.running[::step], color=color, lw=0.6, alpha=0.3)
        mean, lo, hi = band(curves)
        ax.plot(grid, mean, color=color, lw=1.8, label=f"{g.label} ({len(g.runs)} seeds)")
        if len(g.runs) > 1:   # a running reward lives in [-21, 21]: with few seeds the t-band is wider
            ax.fill_between(grid, np.clip(lo, -POINTS, POINTS), np.clip(hi, -POINTS, POINTS), color=color,
                            alpha=0.2, lw=0)
    for t in thresholds:
        ax.axhline(t, color="0.6", lw=0.5, ls=":")
    ax.set_ylim(-POINTS - 0.5, POINTS + 0.5)
    ax.set_xlabel("episodes" if x_of == "episodes" else "wall-clock hours")
    ax.set_ylabel("running reward (EMA 0.99 of episode reward)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8, title="mean, 95% t-interval across seeds; thin: seeds",
              title_fontsize=7)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    fig.savefig(out_base.with_suffix(".png"), dpi=120)
    fig.savefig(out_base.with_suffix(".svg"))
    plt.close(fig)


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
    else:
        name = "tag-" + "-".join(args.get("tag", [])) if args.get("tag") else "report"
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip("-.")
    if not name:
        raise PgpongError(f"name={args.get('name')}: give a name made of letters, digits, . _ + -")
    return name


def build_report(groups: list[Group], differ: list[str], selection: str, command: str, name: str,
                 uri: str, alpha: float) -> tuple[list[dict], list[str], dict]:
    """Rows, verdict lines and the files' text (plots are drawn separately)."""
    rows = [summarize(g) for g in groups]
    verdicts = []
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            a, b = groups[i], groups[j]
            verdicts += [verdict(a, b, t, alpha) for t in THRESHOLDS] + [final_verdict(a, b, alpha)]
    if len(groups) == 1:
        verdicts.append("one group only (the runs differ in nothing but the seed): nothing to compare.")
    r0 = groups[0].runs[0].params
    env = (f"{r0.get('env.id')} (frameskip {r0.get('env.resolved.frameskip', r0.get('env.frameskip'))}, "
           f"sticky actions {r0.get('env.resolved.repeat_action_probability', r0.get('env.repeat_action_probability'))}"
           + (f", episodes capped at {r0.get('env.max_episode_steps')} steps" if r0.get("env.max_episode_steps") not in
              (None, "None") else "") + ")")
    not_finished = [r for g in groups for r in g.runs if r.status != "FINISHED"]
    md = [f"# Report: {name}", "",
          f"Command: `{command}`  ", f"Selection: {selection} in `{uri}`: "
          f"{sum(len(g.runs) for g in groups)} runs in {len(groups)} group(s)"
          + (f", differing in {', '.join(differ)}" if differ and len(groups) > 1 else "") + ".  ",
          f"Environment: {env}.", ""]
    if not_finished:
        md += [f"Note: {len(not_finished)} run(s) not FINISHED ("
               + ", ".join(f"{r.name}: {r.status}" for r in not_finished) + "); their curves end early.", ""]
    md += ["![running reward vs episodes](running_reward_vs_episodes.png)", "",
           "![running reward vs wall-clock hours](running_reward_vs_hours.png)", "",
           "## Table", "",
           "Episodes to a running reward: mean ± sd over the seeds that reached it (how many of the seeds did). "
           "Final running reward, mean reward of the last 100 episodes, wall-clock hours and steps/s: mean ± sd "
           "over seeds.", "", table_markdown(rows),
           "## Verdicts", "",
           f"Does the difference between groups exceed the seed-to-seed spread (alpha = {alpha:g})? "
           "When every seed reached the threshold: Welch's t-test and the 95% Welch interval of the difference. "
           "When some never did: Gehan's censored rank test (a seed that never got there counts as 'later "
           "than its last episode'), exact permutation p-value.", ""]
    md += [f"- {v}" for v in verdicts] + [""]
    md += ["## Runs", "", "| group | seed | run | status | episodes |", "|---|---|---|---|---|"]
    md += [f"| {g.label} | {r.seed} | `{r.run_id}` {r.name} | {r.status} | {int(r.episodes[-1]):,} |"
           for g in groups for r in g.runs] + [""]
    files = {"report.md": "\n".join(md), "table.csv": table_csv(rows), "runs.csv": runs_csv(groups),
             "verdicts.txt": "\n".join(verdicts) + "\n"}
    return rows, verdicts, files


def log_report_run(client, groups: list[Group], name: str, folder: Path, selection: str, command: str) -> str:
    """A report run holding the report's files; in the runs' experiment when they share one."""
    from pgpong.tracking.tracker import experiment_id
    exps = {r.experiment_id for g in groups for r in g.runs}
    exp_id = exps.pop() if len(exps) == 1 else experiment_id(client, "reports")
    ids = ",".join(r.run_id for g in groups for r in g.runs)
    run = client.create_run(exp_id, run_name=f"report:{name}", tags={
        REPORT_TAG: "true", "pgpong.report.selection": selection[:5000], "pgpong.report.command": command[:5000],
        "pgpong.report.runs": ids[:5000]})
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
    """Select, load, group, compute, write, log; returns what was written."""
    args = cliargs.parse(argv, KEYS, repeatable=("tag",), usage=__doc__)
    launch_dir = Path(launch_dir or os.getcwd())
    try:
        alpha = float(args.get("alpha", 0.05))
    except ValueError:
        raise PgpongError(f"alpha={args['alpha']}: must be a number in (0, 1)") from None
    if not 0 < alpha < 1:
        raise PgpongError(f"alpha={alpha:g}: must be in (0, 1)")
    name = default_name(args)
    client, uri = open_client(args.get("tracking.uri", "sqlite:///mlflow.db"), launch_dir)
    selected, selection = select_runs(client, args)
    runs = [load_run(client, r) for r in selected]
    check_comparable(runs)
    groups, differ = group_runs(runs)
    command = "python -m pgpong.report " + " ".join(argv)
    rows, verdicts, files = build_report(groups, differ, selection, command, name, uri, alpha)
    target = resolve_path(args.get("out", "reports"), launch_dir) / name

    def build(folder: Path) -> None:
        for fname, text in files.items():
            (folder / fname).write_text(text)
        plot(groups, "episodes", folder / "running_reward_vs_episodes", f"{name}: running reward vs episodes")
        plot(groups, "hours", folder / "running_reward_vs_hours", f"{name}: running reward vs wall-clock hours")

    write_atomically(target, build)
    report_run = log_report_run(client, groups, name, target, selection, command)
    return {"dir": target, "rows": rows, "verdicts": verdicts, "groups": groups, "run_id": report_run,
            "markdown": files["report.md"]}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        out = report(argv)
    except PgpongError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(table_markdown(out["rows"]))
    print("\n".join(f"- {v}" for v in out["verdicts"]))
    print(f"\npgpong: report -> {out['dir']} (MLflow report run {out['run_id']})", file=sys.stderr)

