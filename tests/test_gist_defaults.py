"""The defaults are the gist's, pinned against the gist's own values (tests/gist_reference.GIST)
and against what they do: the initial weights, the crop, the actions, the first update."""
import gymnasium as gym
import numpy as np

from pgpong.core import optim, policy
from pgpong.core.preprocess import binarize, input_size
from pgpong.core.returns import discount, running_mean
from pgpong.engine.state import new_state
from pgpong.engine.trainer import optimizer
from tests.conftest import compose_cfg
from tests.gist_reference import GIST, discounted, prepro


def test_the_default_config_holds_the_gists_hyperparameters():
    cfg = compose_cfg()
    assert (cfg.H, cfg.batch_size, cfg.lr, cfg.gamma, cfg.decay_rate) == \
        (GIST["H"], GIST["batch_size"], GIST["lr"], GIST["gamma"], GIST["decay_rate"])
    assert (cfg.optim.name, cfg.optim.eps) == ("rmsprop", GIST["eps"])
    assert (cfg.input.kind, cfg.baseline.kind, cfg.actions.kind) == ("diff", "standardize", "two")
    c = cfg.crop
    assert (c.top, c.bottom, c.left, c.right, c.stride) == (*GIST["rows"], 0, 160, GIST["stride"])
    assert input_size(cfg.crop, cfg.input.kind) == 80 * 80


def test_initial_weights_are_randn_over_the_square_root_of_the_fan_in():
    cfg = compose_cfg()
    params = new_state(cfg, np.random.default_rng(7)).params
    draws = np.random.default_rng(7)
    W1 = draws.standard_normal((6400, GIST["H"])) / np.sqrt(6400)     # the gist's (H, D), transposed
    W2 = draws.standard_normal(GIST["H"]) / np.sqrt(GIST["H"])
    assert set(params) == {"W1", "W2"}
    np.testing.assert_array_equal(params["W1"], W1.astype(np.float32))
    np.testing.assert_array_equal(params["W2"], W2.astype(np.float32))


def test_frames_are_cropped_and_binarized_as_the_gist_does():
    cfg = compose_cfg()
    env = gym.make("ALE/Pong-v5")
    frames = [env.reset(seed=3)[0]]
    for a in np.random.default_rng(0).choice([2, 3], size=120):
        frames.append(env.step(int(a))[0])
    env.close()
    for frame in frames:
        np.testing.assert_array_equal(binarize(frame, cfg.crop), prepro(frame))
    assert any(prepro(f)[:80 * 10].any() for f in frames)   # the ball or paddles show up in the top rows too


def test_up_is_action_2_and_down_action_3_chosen_when_a_uniform_draw_is_below_p_up():
    assert (policy.UP, policy.DOWN) == (GIST["UP"], GIST["DOWN"]) and policy.ACTIONS["two"] == (2, 3)
    rng = np.random.default_rng(0)
    u = np.random.default_rng(0).random(4)
    p = np.array([u[0] + 1e-9, u[1] - 1e-9, 1.0, 0.0])
    outputs = np.asarray(policy.ACTIONS["two"])[policy.sample_batch(rng, p)]
    assert outputs.tolist() == [2, 3, 2, 3]


def test_returns_discount_with_gamma_and_restart_at_every_point():
    cfg = compose_cfg()
    r = np.zeros(30)
    r[[6, 17, 29]] = [1, -1, 1]
    np.testing.assert_allclose(discount(r, cfg.gamma), discounted(r, GIST["gamma"]), rtol=1e-15)
    assert running_mean(-21.0, -20.0) == 0.99 * -21.0 + 0.01 * -20.0


def test_the_first_update_is_the_gists_rmsprop_step():
    cfg = compose_cfg(["H=6", "dtype=float64"])
    rng = np.random.default_rng(1)
    params = new_state(cfg, rng).params
    grads = {k: rng.standard_normal(v.shape) * 10.0 ** rng.integers(-6, 2, size=v.shape) for k, v in params.items()}
    new, state = optimizer(cfg)(params, grads, optim.init_state(cfg.optim.name, params))
    for k, g in grads.items():
        cache = (1 - GIST["decay_rate"]) * g ** 2
        expected = params[k] + GIST["lr"] * g / (np.sqrt(cache) + GIST["eps"])
        np.testing.assert_allclose(new[k], expected, rtol=1e-12, err_msg=k)
        np.testing.assert_allclose(state[f"cache.{k}"], cache, rtol=1e-12, err_msg=k)
