"""The report's statistics, pure functions of arrays: crossings, bands, and the tests behind verdicts.

- Episodes to a threshold: the first episode whose running reward is >= the threshold. A seed
  that never gets there within its run is *right-censored*: all we know is "later than its
  last episode".
- Band across seeds: mean +- t(0.975, n-1) * sd / sqrt(n), the 95% t-interval of the mean.
- Verdict between two groups, per threshold:
  * every seed of both groups reached it: Welch's t-test (unequal variances) and the 95%
    Welch-Satterthwaite interval of the difference of means;
  * some seeds did not: Gehan's generalized Wilcoxon test, which ranks censored values only
    against values known to be smaller, with an exact permutation p-value (all relabelings of
    the seeds; Monte Carlo beyond MAX_EXACT of them). With few seeds its smallest possible p
    is large (0.10 for 3 + 3 seeds), and the verdict says so.
  A difference "exceeds the seed-to-seed spread" when p < alpha (0.05 by default).
"""
from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np
from scipy import stats

THRESHOLDS = (-15.0, -10.0, -5.0, 0.0, 5.0)
MAX_EXACT = 20000


def first_crossing(episodes: np.ndarray, running: np.ndarray, threshold: float) -> int | None:
    """The first episode with running reward >= threshold, or None if it never gets there."""
    hit = np.flatnonzero(np.asarray(running) >= threshold)
    return int(episodes[hit[0]]) if hit.size else None


def mean_sd(x) -> tuple[float, float]:
    """Mean and sample standard deviation (nan when undefined)."""
    x = np.asarray(x, float)
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else float("nan")


def band(curves: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) across seeds of (n_seeds, n_points) curves: the t-interval of the mean."""
    curves = np.atleast_2d(np.asarray(curves, float))
    n = curves.shape[0]
    mean = curves.mean(axis=0)
    if n < 2:
        return mean, mean.copy(), mean.copy()
    half = stats.t.ppf(0.5 + level / 2, n - 1) * curves.std(axis=0, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def on_grid(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """y(x) linearly interpolated at grid (x sorted, ties allowed)."""
    return np.interp(grid, np.maximum.accumulate(np.asarray(x, float)), np.asarray(y, float))


@dataclass
class Comparison:
    test: str                  # "welch" | "gehan" | "none"
    p: float                   # two-sided p-value (nan when no test could run)
    diff: float = float("nan")        # mean(b) - mean(a) (welch only)
    ci: tuple = (float("nan"), float("nan"))   # 95% interval of diff (welch only)
    min_p: float = float("nan")       # smallest p the permutation test could give (gehan only)
    later: str = ""            # "a" | "b" | "": the group whose values tend to be larger (later)
    reason: str = ""           # why no test ran


def welch(a, b, level: float = 0.95) -> Comparison:
    """Welch's t-test of mean(b) - mean(a) and its Welch-Satterthwaite interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or b.size < 2:
        return Comparison("none", float("nan"), reason="needs at least 2 seeds per group")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(b.mean() - a.mean())
    se = np.sqrt(va + vb)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return Comparison("welch", p, diff, (diff, diff), later="b" if diff > 0 else "a" if diff < 0 else "")
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.5 + level / 2, df) * se)
    return Comparison("welch", p, diff, (diff - half, diff + half), later="b" if diff > 0 else "a" if diff < 0 else "")


def gehan_scores(x: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per value: how many pooled values are surely smaller minus how many are surely larger.

    x[i] is an observed time when observed[i], else a censoring time (true time > x[i]).
    i is surely larger than j when j is observed and x[i] > x[j] (or x[i] >= x[j] with i censored).
    """
    x, obs = np.asarray(x, float), np.asarray(observed, bool)
    xi, xj = x[:, None], x[None, :]
    larger = obs[None, :] & ((xi > xj) | (~obs[:, None] & (xi >= xj)))   # (n, n): i surely > j
    np.fill_diagonal(larger, False)
    return larger.sum(axis=1) - larger.sum(axis=0)


def gehan(a_x, a_obs, b_x, b_obs, rng_seed: int = 0) -> Comparison:
    """Gehan's censored rank test of group b against a, two-sided exact permutation p-value."""
    x = np.concatenate([np.asarray(a_x, float), np.asarray(b_x, float)])
    obs = np.concatenate([np.asarray(a_obs, bool), np.asarray(b_obs, bool)])
    na, n = len(a_x), len(x)
    if na < 1 or n - na < 1:
        return Comparison("none", float("nan"), reason="a group has no seeds")
    if not obs.any():
        return Comparison("none", float("nan"), reason="no seed of either group got there")
    scores = gehan_scores(x, obs)
    b_score = scores[na:].sum()                                     # > 0: b's values surely larger more often
    observed_stat = abs(b_score)
    if comb(n, na) <= MAX_EXACT:
        idx = np.array(list(combinations(range(n), n - na)))        # every choice of "group b"
    else:
        rng = np.random.default_rng(rng_seed)
        idx = np.array([rng.permutation(n)[: n - na] for _ in range(MAX_EXACT)])
    perm = np.abs(scores[idx].sum(axis=1))
    p = float(np.mean(perm >= observed_stat - 1e-9))
    min_p = float(np.mean(perm >= perm.max() - 1e-9)) if perm.max() > 0 else 1.0
    return Comparison("gehan", p, min_p=min_p, later="b" if b_score > 0 else "a" if b_score < 0 else "")


def compare_times(a_x, a_obs, b_x, b_obs) -> Comparison:
    """Episodes-to-threshold of two groups: Welch when nothing is censored, Gehan otherwise."""
    a_obs, b_obs = np.asarray(a_obs, bool), np.asarray(b_obs, bool)
    if a_obs.all() and b_obs.all():
        return welch(np.asarray(a_x, float), np.asarray(b_x, float))
    return gehan(a_x, a_obs, b_x, b_obs)
