"""Parity: the trainer's episode gradient vs an independent dense float64 reference and
finite differences of the log-likelihood objective, for every action set and baseline."""
import numpy as np
import pytest

from pgpong.core import policy
from pgpong.core.gradient import episode_gradient, episode_matrix
from pgpong.core.preprocess import sparse_input


def make_episode(rng, T=40, D=60, H=7, actions="two", dtype=np.float64, value_head=False):
    """A random episode run through the real forward pass: sparse {-1,0,1} inputs, sampled actions."""
    params = policy.init_params(rng, D, H, actions, value_head, dtype)
    if value_head:
        params["Wv"] = rng.standard_normal(H).astype(dtype) * 0.3
        params["bv"] = np.asarray(0.1, dtype)
    frames = (rng.random((T + 1, D)) < 0.1).astype(np.uint8)
    idx, val, hs, dlogps, acts = [], [], [], [], []
    for t in range(T):
        i, v = sparse_input(frames[t + 1], frames[t], "diff")
        h = policy.hidden(params["W1"], i, v)
        p = policy.probs(params["W2"], h)
        a = policy.sample(rng, p)
        idx.append(i); val.append(v); hs.append(h); dlogps.append(policy.dlogp(p, a)); acts.append(a)
    rewards = np.zeros(T)
    rewards[[9, 22, T - 1]] = [-1, 1, -1]
    X = episode_matrix(idx, val, D, dtype)
    return params, X, np.vstack(hs), np.asarray(dlogps, dtype), rewards, np.array(acts)


def dense_reference(params, Xd, acts, rewards, gamma, baseline):
    """The gist's math in its own orientation (W1 as (H, D)), dense float64, written from scratch."""
    W1 = params["W1"].T.astype(np.float64)           # (H, D)
    W2 = params["W2"].astype(np.float64)
    T = len(rewards)
    G = np.zeros(T)
    acc = 0.0
    for t in reversed(range(T)):
        acc = 0.0 if rewards[t] != 0 else acc
        acc = acc * gamma + rewards[t]
        G[t] = acc
    hs = np.maximum(Xd @ W1.T, 0)                     # (T, H)
    if W2.ndim == 1:
        p = 1 / (1 + np.exp(-(hs @ W2)))
        dlogit = (acts == 0).astype(float) - p        # (T,)
    else:
        z = hs @ W2
        p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
        dlogit = np.eye(W2.shape[1])[acts] - p        # (T, A)
    if baseline == "standardize":
        adv = (G - G.mean()) / G.std()
    elif baseline == "mean":
        adv = G - G.mean()
    elif baseline == "none":
        adv = G
    else:
        v = hs @ params["Wv"] + params["bv"]
        adv = G - v
    dlogit = dlogit * (adv if dlogit.ndim == 1 else adv[:, None])
    dW2 = hs.T @ dlogit
    dh = np.outer(dlogit, W2) if W2.ndim == 1 else dlogit @ W2.T
    dh[hs <= 0] = 0
    ref = {"W1": (dh.T @ Xd).T, "W2": dW2}           # back to our (D, H) orientation
    if baseline == "value":
        ref["Wv"] = hs.T @ (G - v)
        ref["bv"] = np.sum(G - v)
    return ref


CASES = [(a, b) for a in ("two", "three") for b in ("standardize", "none", "mean", "value")]


@pytest.mark.parametrize("actions,baseline", CASES)
def test_episode_gradient_equals_dense_float64_reference(actions, baseline):
    rng = np.random.default_rng(1)
    params, X, Hs, dlogps, rewards, acts = make_episode(rng, actions=actions, value_head=baseline == "value")
    grads, _ = episode_gradient(params, X, Hs, dlogps, rewards, 0.99, baseline)
    ref = dense_reference(params, X.toarray(), acts, rewards, 0.99, baseline)
    assert set(grads) == set(ref)
    for k in ref:
        np.testing.assert_allclose(grads[k], ref[k], rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("actions,baseline", [("two", "standardize"), ("three", "mean"), ("two", "value")])
def test_float32_gradient_matches_float64_reference_to_1e_4(actions, baseline):
    """The trainer's default precision: float32 weights and activations, parity within rtol 1e-4."""
    rng = np.random.default_rng(2)
    params, X, Hs, dlogps, rewards, acts = make_episode(rng, actions=actions, dtype=np.float32,
                                                         value_head=baseline == "value")
    grads, _ = episode_gradient(params, X, Hs, dlogps, rewards, 0.99, baseline)
    ref = dense_reference({k: v.astype(np.float64) for k, v in params.items()}, X.toarray().astype(np.float64),
                          acts, rewards, 0.99, baseline)
    for k in ref:
        assert grads[k].dtype == np.float32
        scale = np.abs(ref[k]).max()
        np.testing.assert_allclose(grads[k], ref[k], rtol=1e-4, atol=1e-4 * scale, err_msg=k)


def log_likelihood_objective(params, Xd, acts, adv):
    """J = sum_t adv_t log pi(a_t | x_t), with adv held fixed (the REINFORCE surrogate)."""
    hs = np.maximum(Xd @ params["W1"], 0)
    W2 = params["W2"]
    if W2.ndim == 1:
        p = 1 / (1 + np.exp(-(hs @ W2)))
        logp = np.where(acts == 0, np.log(p), np.log(1 - p))
    else:
        z = hs @ W2
        logp = (z - np.log(np.exp(z).sum(1, keepdims=True)))[np.arange(len(acts)), acts]
    return float(np.sum(adv * logp))


@pytest.mark.parametrize("actions", ["two", "three"])
def test_policy_gradient_matches_finite_differences(actions):
    rng = np.random.default_rng(3)
    params, X, Hs, dlogps, rewards, acts = make_episode(rng, actions=actions)
    adv = rng.standard_normal(len(rewards))
    dlogit = dlogps * (adv if dlogps.ndim == 1 else adv[:, None])
    grads = policy.backward(params, X, Hs, dlogit)
    Xd = X.toarray()
    active_rows = np.flatnonzero(np.abs(Xd).sum(0))
    eps = 1e-6
    for k in ("W1", "W2"):
        for _ in range(12):
            if k == "W1":
                pos = (rng.choice(active_rows), rng.integers(params["W1"].shape[1]))
            else:
                pos = tuple(rng.integers(s) for s in params[k].shape)
            plus = {kk: v.copy() for kk, v in params.items()}
            minus = {kk: v.copy() for kk, v in params.items()}
            plus[k][pos] += eps
            minus[k][pos] -= eps
            fd = (log_likelihood_objective(plus, Xd, acts, adv) - log_likelihood_objective(minus, Xd, acts, adv)) / (2 * eps)
            assert grads[k][pos] == pytest.approx(fd, rel=1e-5, abs=1e-7), (k, pos)


def test_value_head_gradient_matches_finite_differences():
    rng = np.random.default_rng(4)
    params, X, Hs, dlogps, rewards, acts = make_episode(rng, value_head=True)
    G = rng.standard_normal(len(rewards))
    grads = policy.value_backward(Hs, G, policy.value(params, Hs))

    def neg_loss(p):
        return -0.5 * float(np.sum((G - policy.value(p, Hs)) ** 2))
    eps = 1e-6
    for k, pos in [("Wv", (0,)), ("Wv", (3,)), ("bv", ())]:
        plus = dict(params); minus = dict(params)
        plus[k] = params[k].copy(); minus[k] = params[k].copy()
        plus[k][pos] += eps; minus[k][pos] -= eps
        fd = (neg_loss(plus) - neg_loss(minus)) / (2 * eps)
        assert grads[k][pos] == pytest.approx(fd, rel=1e-6), (k, pos)


def test_sparse_forward_equals_dense_forward():
    rng = np.random.default_rng(5)
    W1 = rng.standard_normal((50, 6))
    x = rng.choice([-1, 0, 0, 0, 1], size=50).astype(np.int8)
    idx = np.flatnonzero(x)
    np.testing.assert_allclose(policy.hidden(W1, idx, x[idx]), np.maximum(x @ W1, 0))


def test_sampling_follows_probabilities():
    rng = np.random.default_rng(6)
    two = np.mean([policy.sample(rng, np.asarray(0.3)) == 0 for _ in range(20000)])
    three = np.bincount([policy.sample(rng, np.array([0.2, 0.5, 0.3])) for _ in range(20000)], minlength=3) / 20000
    assert two == pytest.approx(0.3, abs=0.015)
    np.testing.assert_allclose(three, [0.2, 0.5, 0.3], atol=0.015)
