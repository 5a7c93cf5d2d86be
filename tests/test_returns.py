import numpy as np
import pytest

from pgpong.core.returns import advantages, discount, running_mean, standardize


def test_discount_hand_computed():
    r = np.array([0, 0, 1.0])
    np.testing.assert_allclose(discount(r, 0.5), [0.25, 0.5, 1.0])


def test_discount_resets_at_each_point():
    # two points: -1 at t=1, +1 at t=4; the sum restarts after each
    r = np.array([0, -1.0, 0, 0, 1.0, 0])
    g = 0.9
    expected = [-0.9, -1.0, 0.81, 0.9, 1.0, 0.0]
    np.testing.assert_allclose(discount(r, g), expected)


def test_standardize_gives_zero_mean_unit_std():
    G = np.array([1.0, 2.0, 3.0, 6.0])
    a = standardize(G)
    np.testing.assert_allclose(a, (G - 3.0) / np.sqrt(3.5))
    assert abs(a.mean()) < 1e-12 and abs(a.std() - 1) < 1e-12


def test_standardize_of_constant_returns_is_zero_not_nan():
    np.testing.assert_array_equal(standardize(np.full(4, 0.3)), np.zeros(4))


@pytest.mark.parametrize("kind,expected", [
    ("none", [1.0, 2.0, 6.0]),
    ("mean", [-2.0, -1.0, 3.0]),
    ("value", [0.5, 1.0, 5.0]),
])
def test_baselines_hand_computed(kind, expected):
    G = np.array([1.0, 2.0, 6.0])
    v = np.array([0.5, 1.0, 1.0])
    np.testing.assert_allclose(advantages(G, kind, v), expected)


def test_running_mean_starts_at_first_reward_then_ema():
    r = running_mean(None, -21.0)
    assert r == -21.0
    assert running_mean(r, -19.0) == pytest.approx(0.99 * -21 + 0.01 * -19)
