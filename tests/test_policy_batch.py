"""The batched forward pass for N envs (the fast path's act phase) equals the per-env one."""
import numpy as np
import pytest

from pgpong.core import policy
from pgpong.core.preprocess import batch_input, sparse_input, sparse_rows


def envs_inputs(rng, n=9, D=6400):
    """Binarized frames of n envs with a few dozen changes between steps; some on their first step."""
    prev = (rng.random((n, D)) < 0.05).astype(np.uint8)
    cur = prev.copy()
    flip = rng.random((n, D)) < 0.006
    cur[flip] ^= 1
    cur[3] = prev[3]                                          # an env whose input is all zero
    has_prev = np.ones(n, bool)
    has_prev[[0, 5]] = False                                  # first steps of episodes
    return cur, prev, has_prev


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("actions", ["two", "three"])
def test_batched_forward_equals_per_env_hidden_and_probs(dtype, actions):
    rng = np.random.default_rng(0)
    cur, prev, has_prev = envs_inputs(rng)
    params = policy.init_params(rng, cur.shape[1], 50, actions, False, dtype)
    indptr, cols, vals = sparse_rows(batch_input(cur, prev, has_prev, "diff"))
    h = policy.hidden_batch(params["W1"], indptr, cols, vals)
    p = policy.probs(params["W2"], h)
    assert h.dtype == dtype and p.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for i in range(len(cur)):
        idx, val = sparse_input(cur[i], prev[i] if has_prev[i] else None, "diff")
        hi = policy.hidden(params["W1"], idx, val)
        np.testing.assert_allclose(h[i], hi, rtol=tol, atol=tol)
        np.testing.assert_allclose(p[i], policy.probs(params["W2"], hi), rtol=tol, atol=tol)
    assert not h[[0, 3, 5]].any()                             # zero input -> zero hidden state


@pytest.mark.parametrize("actions", ["two", "three"])
def test_batched_sampling_draws_what_per_env_sampling_draws(actions):
    rng = np.random.default_rng(1)
    n = 500
    p = rng.random(n).astype(np.float32) if actions == "two" else rng.dirichlet([1, 1, 1], n).astype(np.float32)
    a = policy.sample_batch(np.random.default_rng(7), p)
    one_rng = np.random.default_rng(7)
    expected = [policy.sample(one_rng, p[i]) for i in range(n)]
    np.testing.assert_array_equal(a, expected)
    for i in range(n):
        np.testing.assert_allclose(policy.dlogp_batch(p, a)[i], policy.dlogp(p[i], int(a[i])), rtol=1e-6)
