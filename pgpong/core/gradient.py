"""One finished episode -> its policy gradient (and value-head gradient): the learning math.

    G      = discount(r, gamma)                     returns, reset at every point
    adv    = baseline(G)                            standardize | none | mean | value
    dlogit = dlogp * adv                            per step
    grads  = backward(X, Hs, dlogit)                ascent direction on sum_t adv_t log pi(a_t|x_t)
"""
import numpy as np
import scipy.sparse as sp

from pgpong.core import policy
from pgpong.core.returns import advantages, discount


def input_matrix(indptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, D: int, dtype) -> sp.csr_matrix:
    """(T, D) sparse input matrix: step t's non-zeros are cols[indptr[t]:indptr[t+1]], valued vals[...]."""
    return sp.csr_matrix((vals.astype(dtype), cols, indptr), shape=(len(indptr) - 1, D))


def steps_csr(idx: list, val: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, cols, vals) of per-step non-zero indices idx[t] and values val[t]."""
    indptr = np.zeros(len(idx) + 1, np.int64)
    np.cumsum([len(i) for i in idx], out=indptr[1:])
    cols = np.concatenate(idx) if idx else np.empty(0, np.int32)
    vals = np.concatenate(val) if val else np.empty(0, np.int8)
    return indptr, cols, vals


def episode_matrix(idx: list, val: list, D: int, dtype) -> sp.csr_matrix:
    """(T, D) sparse input matrix from per-step non-zero indices and values."""
    return input_matrix(*steps_csr(idx, val), D, dtype)


def episode_gradient(params: dict, X, Hs: np.ndarray, dlogps: np.ndarray, rewards: np.ndarray,
                     gamma: float, baseline: str) -> tuple[dict, dict]:
    """(grads, info) for one episode; info has the value loss when the baseline is learned.

    X: (T, D) inputs, Hs: (T, H) hidden states at acting time, dlogps: (T,) or (T, 3),
    rewards: (T,).
    """
    G = discount(rewards, gamma)                                          # (T,)
    v = policy.value(params, Hs) if baseline == "value" else None
    adv = advantages(G, baseline, v)                                      # (T,)
    dlogit = dlogps * (adv if dlogps.ndim == 1 else adv[:, None])
    grads = policy.backward(params, X, Hs, dlogit.astype(Hs.dtype, copy=False))
    info = {}
    if v is not None:
        grads.update(policy.value_backward(Hs, G, v))
        info["value_loss"] = 0.5 * float(np.mean((G - v) ** 2))
    return grads, info
