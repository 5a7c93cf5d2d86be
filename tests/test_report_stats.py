"""The report's statistics on data with known answers: crossings, censoring, KM medians, IQM, P(improvement)."""
import numpy as np
import pytest

from pgpong.report import stats
from pgpong.report.stats import (
    censored_times,
    first_crossing,
    iqm_band,
    km_median,
    p_greater,
    probability_of_improvement,
    read_interval,
    sooner_scores,
)


def test_first_crossing_is_the_first_point_at_or_above_the_threshold():
    e = np.arange(1, 11)
    r = np.array([-21, -16, -15.5, -15, -16, -14, -10, -9, -9, -9], float)
    assert first_crossing(e, r, -15) == 4
    assert first_crossing(e * 36.0, r, -10) == 7 * 36.0        # any axis: seconds, steps
    assert first_crossing(e, r, 0) is None


def test_a_run_that_never_gets_there_is_censored_at_its_last_point_not_dropped():
    curves = [(np.arange(1, 6), np.array([-9, -8, -5, -4, -3.0])),      # reaches -5 at 3
              (np.arange(1, 8), np.full(7, -12.0))]                     # never: censored at 7
    t, reached = censored_times(curves, -5)
    assert t.tolist() == [3, 7] and reached.tolist() == [True, False]


def test_km_median_of_the_6mp_leukemia_arm_is_23_weeks():
    # Freireich et al. (1963), 6-MP arm, the textbook censored example: S(22) = 0.538, S(23) = 0.448,
    # so the Kaplan-Meier median is 23 weeks; the log-log interval's lower end is 13, the upper unbounded.
    weeks = [6, 6, 6, 6, 7, 9, 10, 10, 11, 13, 16, 17, 19, 20, 22, 23, 25, 32, 32, 34, 35]
    event = [1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    m = km_median(weeks, np.array(event, bool))
    assert (m.median, m.low, m.high, m.reached, m.n) == (23, 13, np.inf, 9, 21)


def test_km_median_without_censoring_is_the_first_time_half_are_done():
    m = km_median([1, 2, 3, 4], [True] * 4)
    assert m.median == 2 and m.low == 1 and m.high == 4


def test_km_median_of_an_all_censored_group_is_unbounded():
    m = km_median([500, 500, 480], [False] * 3)
    assert np.isinf(m.median) and np.isinf(m.low) and np.isinf(m.high) and m.reached == 0


def test_km_median_when_fewer_than_half_got_there_is_unbounded():
    assert np.isinf(km_median([100, 500, 500], [True, False, False]).median)


def test_iqm_trims_a_quarter_each_side_and_matches_rliable():
    from rliable import metrics
    rng = np.random.default_rng(1)
    curves = rng.normal(size=(8, 5))
    curves[0] = 1000.0                                          # one wild seed moves the IQM little
    mid, lo, hi = iqm_band(curves, reps=200)
    assert mid == pytest.approx([metrics.aggregate_iqm(curves[:, [j]]) for j in range(5)])
    col = np.arange(1.0, 9.0)                                   # 1..8: IQM = mean(3, 4, 5, 6)
    assert iqm_band(np.c_[col, col], reps=50)[0] == pytest.approx([4.5, 4.5])
    assert (lo <= mid).all() and (mid <= hi).all()


def test_iqm_band_of_identical_seeds_has_no_width():
    curves = np.tile(np.linspace(-21, 5, 30), (4, 1))
    mid, lo, hi = iqm_band(curves, reps=100)
    assert mid == pytest.approx(curves[0]) and lo == pytest.approx(curves[0]) and hi == pytest.approx(curves[0])


def test_bootstrap_is_reproducible_and_leaves_numpys_global_generator_alone():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = probability_of_improvement([1, 2, 3, 4], [2, 3, 4, 5])
    assert (np.random.get_state()[1] == before).all()
    assert probability_of_improvement([1, 2, 3, 4], [2, 3, 4, 5]) == a


def test_p_greater_is_rliables_probability_of_improvement():
    from rliable import metrics
    rng = np.random.default_rng(0)
    for n, m in ((3, 3), (2, 5), (10, 10)):
        x, y = rng.integers(0, 4, n).astype(float)[:, None], rng.integers(0, 4, m).astype(float)[:, None]
        assert p_greater(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))


def test_identical_groups_cannot_be_told_apart():
    v = probability_of_improvement([-5, -3, 0, 2], [-5, -3, 0, 2])
    assert v.p == 0.5 and v.low < 0.5 < v.high and v.verdict == "cannot tell"
    same = probability_of_improvement([-4.0] * 3, [-4.0] * 3)     # every seed the same curve: no spread at all
    assert (same.p, same.low, same.high, same.verdict) == (0.5, 0.5, 0.5, "cannot tell")


def test_a_strictly_better_group_is_better_and_the_other_worse():
    better = probability_of_improvement([10, 11, 12], [1, 2, 3])
    assert (better.p, better.low, better.high, better.verdict) == (1.0, 1.0, 1.0, "better")
    worse = probability_of_improvement([1, 2, 3], [10, 11, 12])
    assert (worse.p, worse.high, worse.verdict) == (0.0, 0.0, "worse")


def test_overlapping_groups_give_an_interval_around_half():
    v = probability_of_improvement([1, 4, 6, 8], [2, 3, 5, 7])
    assert v.p == pytest.approx(9 / 16) and v.low < 0.5 < v.high and v.verdict == "cannot tell"


def test_no_verdict_below_the_minimum_seeds_even_with_complete_separation():
    v = probability_of_improvement([10, 11], [1, 2])
    assert v.p == 1.0 and v.verdict == "cannot tell" and f"fewer than {stats.MIN_SEEDS} seeds" in v.reason


@pytest.mark.parametrize("low, high, verdict", [(0.52, 0.9, "better"), (0.1, 0.49, "worse"), (0.4, 0.7, "cannot tell"),
                                                (0.5, 1.0, "cannot tell"), (0.0, 0.5, "cannot tell")])
def test_the_verdict_reads_the_interval_against_one_half(low, high, verdict):
    assert read_interval(low, high) == verdict


def test_sooner_scores_tie_runs_that_did_not_get_there_within_the_horizon():
    # reached at 100 and 300 (300 is past the 250 horizon: as if not reached), never (censored at 250 and 400)
    s = sooner_scores([100, 300, 250, 400], [True, True, False, False], horizon=250)
    assert s[0] == -100 and s[1] == s[2] == s[3] < -250
    # 2 of 3 reached vs none: 6 sure wins and 3 ties of 9 pairs
    x = sooner_scores([420, 462, 500], [True, True, False], 500)
    y = sooner_scores([500, 500, 500], [False] * 3, 500)
    assert p_greater(x[:, None], y[:, None]) == pytest.approx(7.5 / 9)
