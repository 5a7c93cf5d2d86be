import numpy as np

from pgpong.core import optim


def test_rmsprop_step_matches_formula():
    rng = np.random.default_rng(0)
    p = {"W": rng.standard_normal(5)}
    g = {"W": rng.standard_normal(5)}
    cache0 = rng.random(5)
    lr, d, eps = 1e-3, 0.99, 1e-5
    new_p, new_s = optim.rmsprop(p, g, {"cache.W": cache0}, {"W": lr}, d, eps)
    cache = d * cache0 + (1 - d) * g["W"] ** 2
    np.testing.assert_allclose(new_s["cache.W"], cache)
    np.testing.assert_allclose(new_p["W"], p["W"] + lr * g["W"] / (np.sqrt(cache) + eps))


def test_rmsprop_first_step_from_zero_cache_moves_by_lr_over_sqrt_one_minus_decay():
    p = {"W": np.zeros(3)}
    g = {"W": np.array([2.0, -3.0, 0.5])}
    new_p, _ = optim.rmsprop(p, g, optim.init_state("rmsprop", p), {"W": 1e-2}, 0.99, 1e-12)
    np.testing.assert_allclose(new_p["W"], 1e-2 * np.sign(g["W"]) / np.sqrt(0.01), rtol=1e-9)


def test_adam_two_steps_match_formula():
    p = {"W": np.array([1.0, -1.0])}
    g1, g2 = np.array([0.5, 1.0]), np.array([-0.2, 0.3])
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 1e-2
    s = optim.init_state("adam", p)
    p1, s = optim.adam(p, {"W": g1}, s, {"W": lr}, b1, b2, eps)
    p2, s = optim.adam(p1, {"W": g2}, s, {"W": lr}, b1, b2, eps)
    m = (1 - b1) * g1
    v = (1 - b2) * g1 ** 2
    ref1 = p["W"] + lr * (m / (1 - b1)) / (np.sqrt(v / (1 - b2)) + eps)
    m = b1 * m + (1 - b1) * g2
    v = b2 * v + (1 - b2) * g2 ** 2
    ref2 = ref1 + lr * (m / (1 - b1 ** 2)) / (np.sqrt(v / (1 - b2 ** 2)) + eps)
    np.testing.assert_allclose(p2["W"], ref2)
    assert int(s["t"]) == 2


def test_step_uses_baseline_lr_for_the_value_head(cfg_factory):
    cfg = cfg_factory(["baseline=value", "lr=1e-4", "baseline.lr=1e-2"])
    p = {"W1": np.zeros(2), "Wv": np.zeros(2)}
    g = {"W1": np.ones(2), "Wv": np.ones(2)}
    new_p, _ = optim.step(p, g, optim.init_state("rmsprop", p), name="rmsprop", lr=cfg.lr,
                          value_lr=cfg.baseline.lr, eps=cfg.optim.eps, decay_rate=cfg.decay_rate)
    ratio = new_p["Wv"][0] / new_p["W1"][0]
    np.testing.assert_allclose(ratio, 1e-2 / 1e-4, rtol=1e-6)
