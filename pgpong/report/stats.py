"""The report's statistics: pure functions of arrays, computed with rliable and lifelines.

- Time to a threshold: the first point (episode, wall-clock second or agent step) whose running
  reward is >= the threshold. A run that never gets there is *right-censored* at its last
  point: all it says is "later than that". It is neither dropped nor counted as reaching it.
- Median time to a threshold per group: the Kaplan-Meier median with its 95% interval
  (lifelines, exponential Greenwood interval); infinite when fewer than half the runs got there.
- Curves across seeds: at each point the interquartile mean (IQM, 25% trimmed mean) of the
  runs' running rewards and its 95% stratified-bootstrap percentile interval (rliable), whole
  runs resampled so each bootstrap curve is made of real seeds.
- Between two groups X, Y: the probability of improvement P(X > Y) (rliable: the Mann-Whitney U
  over all pairs of runs, ties count half) with its 95% stratified-bootstrap interval. For a
  time to a threshold, "X better" means X's run gets there sooner within the common horizon
  (the shortest run of both groups); runs that did not get there by then tie with each other.
  The verdict reads the interval: its lower end above 0.5 is "better", its upper end below 0.5
  "worse", otherwise "cannot tell". With fewer than MIN_SEEDS seeds in a group there is no
  verdict: a bootstrap of two runs per group has too few distinct resamples to mean anything.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

THRESHOLDS = (-10.0, -5.0, 0.0, 10.0)
OPTIONAL_THRESHOLDS = (10.0,)   # shown only when some run reached them
REPS = 2000                     # bootstrap resamples
SEED = 0                        # bootstrap random seed: the same data give the same report
MIN_SEEDS = 3                   # seeds per group below which no verdict is drawn
LEVEL = 0.95


def first_crossing(x: np.ndarray, running: np.ndarray, threshold: float) -> float | None:
    """The first x (episode, second, step) whose running reward is >= threshold, or None."""
    hit = np.flatnonzero(np.asarray(running) >= threshold)
    return float(np.asarray(x)[hit[0]]) if hit.size else None


def censored_times(curves: list[tuple[np.ndarray, np.ndarray]], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per run (x, running): (x where it reached threshold, else its last x; reached?)."""
    t, reached = [], []
    for x, running in curves:
        hit = first_crossing(x, running, threshold)
        t.append(float(x[-1]) if hit is None else hit)
        reached.append(hit is not None)
    return np.asarray(t, float), np.asarray(reached, bool)


@dataclass
class Median:
    median: float     # inf: fewer than half the runs got there
    low: float        # 95% interval; inf: not bounded by the data
    high: float
    reached: int      # runs that got there
    n: int


def km_median(t, reached, level: float = LEVEL) -> Median:
    """Kaplan-Meier median of right-censored times and its interval (lifelines)."""
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times
    t, reached = np.asarray(t, float), np.asarray(reached, bool)
    km = KaplanMeierFitter(alpha=1 - level).fit(t, event_observed=reached)
    ci = median_survival_times(km.confidence_interval_)
    return Median(float(km.median_survival_time_), float(ci.iloc[0, 0]), float(ci.iloc[0, 1]),
                  int(reached.sum()), len(t))


@contextmanager
def _seeded(seed: int):
    """rliable draws from numpy's global generator: seed it, and give it back untouched."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm(scores: np.ndarray) -> np.ndarray:
    """IQM across runs (axis 0) of (runs, 1, points) scores, per point: rliable's aggregate_iqm
    (scipy's trim_mean cutting int(n / 4) runs from each end) for every point at once; sorting
    once is ~20x faster than trim_mean per call, which a 2000-resample bootstrap calls 2000 times."""
    x = np.sort(scores[:, 0, :], axis=0)
    cut = int(0.25 * x.shape[0])
    return x[cut:x.shape[0] - cut].mean(axis=0)


def iqm_band(curves: np.ndarray, reps: int = REPS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IQM, low, high) at each point of (runs, points) curves: stratified bootstrap over runs (rliable)."""
    from rliable import library as rly
    scores = np.asarray(curves, float)[:, None, :]          # (runs, tasks=1, points)
    with _seeded(seed):
        point, interval = rly.get_interval_estimates({"g": scores}, iqm, reps=reps, confidence_interval_size=LEVEL)
    return point["g"], interval["g"][0], interval["g"][1]


@dataclass
class Improvement:
    p: float          # P(X > Y)
    low: float
    high: float
    verdict: str      # "better" | "worse" | "cannot tell"
    reason: str = ""  # why no verdict


def p_greater(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) of (runs, 1) scores, ties half: rliable's probability_of_improvement for one task,
    written as a mean over pairs because scipy's Mann-Whitney costs ~2 ms a call, 2000 calls a bootstrap."""
    x, y = x[:, 0, None], y[None, :, 0]
    return float(np.mean((x > y) + 0.5 * (x == y)))


def probability_of_improvement(x, y, reps: int = REPS, seed: int = SEED) -> Improvement:
    """P(a run of X scores higher than a run of Y) with its bootstrap interval and the verdict it supports."""
    from rliable import library as rly
    x, y = np.asarray(x, float)[:, None], np.asarray(y, float)[:, None]     # (runs, tasks=1)
    with _seeded(seed):
        point, interval = rly.get_interval_estimates({"xy": (x, y)}, p_greater,
                                                     reps=reps, confidence_interval_size=LEVEL)
    p, (low, high) = float(point["xy"]), (float(v) for v in np.ravel(interval["xy"]))
    if min(len(x), len(y)) < MIN_SEEDS:
        return Improvement(p, low, high, "cannot tell", f"fewer than {MIN_SEEDS} seeds in a group")
    return Improvement(p, low, high, read_interval(low, high))


def read_interval(low: float, high: float) -> str:
    """The verdict a P(X > Y) interval supports."""
    return "better" if low > 0.5 else "worse" if high < 0.5 else "cannot tell"


def sooner_scores(t, reached, horizon: float) -> np.ndarray:
    """Scores for 'gets there sooner' within horizon: -time if reached by then, else below every such score."""
    t, reached = np.asarray(t, float), np.asarray(reached, bool)
    return np.where(reached & (t <= horizon), -t, -2 * abs(horizon) - 1)


def on_grid(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """y(x) linearly interpolated at grid (x sorted, ties allowed)."""
    return np.interp(grid, np.maximum.accumulate(np.asarray(x, float)), np.asarray(y, float))
