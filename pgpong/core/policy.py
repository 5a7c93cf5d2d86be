"""The policy network, forward and backward side by side.

    h     = relu(x W1)          x: (D,) input, W1: (D, H)   (the gist's W1 transposed)
    two:   p = sigmoid(h . W2)  W2: (H,)    p = P(UP)
    three: p = softmax(h W2)    W2: (H, 3)  over (UP, DOWN, NOOP)

For a whole episode of T steps, X is the (T, D) input matrix (scipy CSR: inputs are sparse),
Hs the (T, H) hidden states and dlogit the gradient of the log-likelihood of the sampled
actions with respect to the logits, already multiplied by the advantage.
"""
import numpy as np
import scipy.sparse as sp

try:    # scipy's C++ kernel behind `csr_matrix @ dense`, called without building the matrix object
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:   # pragma: no cover - private scipy API; the public path below gives the same numbers
    _csr_matvecs = None

UP, DOWN, NOOP = 2, 3, 0
ACTIONS = {"two": (UP, DOWN), "three": (UP, DOWN, NOOP)}   # env action of each policy output


def init_params(rng: np.random.Generator, D: int, H: int, actions: str, value_head: bool, dtype) -> dict:
    """Xavier-style init, randn / sqrt(fan_in), as in the gist; the value head starts at zero."""
    params = {"W1": (rng.standard_normal((D, H)) / np.sqrt(D)).astype(dtype)}
    n_out = len(ACTIONS[actions])
    shape = (H,) if n_out == 2 else (H, n_out)
    params["W2"] = (rng.standard_normal(shape) / np.sqrt(H)).astype(dtype)
    if value_head:
        params["Wv"] = np.zeros(H, dtype)
        params["bv"] = np.zeros((), dtype)
    return params


def hidden(W1: np.ndarray, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
    """h = relu(x W1) for one sparse input (idx, val): only the rows of W1 where x != 0."""
    h = val.astype(W1.dtype) @ W1[idx]   # (H,)
    return np.maximum(h, 0, out=h)


def probs(W2: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Action probabilities from hidden states h (..., H): P(UP) for two, softmax for three."""
    logit = h @ W2
    if W2.ndim == 1:
        return 1.0 / (1.0 + np.exp(-logit))
    z = np.exp(logit - logit.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def sample(rng: np.random.Generator, p: np.ndarray) -> int:
    """Index of the sampled output: two actions, UP (0) when u < P(UP) as in the gist; else by CDF."""
    u = rng.random()
    if p.ndim == 0:
        return 0 if u < p else 1
    return min(int(np.searchsorted(np.cumsum(p), u, side="right")), p.size - 1)


def dlogp(p: np.ndarray, a: int) -> np.ndarray:
    """d log pi(a) / d logit: y - p (two: y = 1 for UP), onehot(a) - p (three)."""
    if p.ndim == 0:
        return (1.0 if a == 0 else 0.0) - p
    g = -p.copy()
    g[a] += 1.0
    return g


def backward(params: dict, X, Hs: np.ndarray, dlogit: np.ndarray) -> dict:
    """Gradients of sum_t dlogit_t . logit_t w.r.t. W1 and W2 for one episode.

    X: (T, D) sparse inputs, Hs: (T, H), dlogit: (T,) for two actions, (T, 3) for three.
    """
    W2 = params["W2"]
    dW2 = Hs.T @ dlogit                                                  # (H,) or (H, 3)
    dh = np.outer(dlogit, W2) if W2.ndim == 1 else dlogit @ W2.T         # (T, H)
    dh[Hs <= 0] = 0                                                      # relu
    dW1 = np.asarray(X.T @ dh)                                           # (D, H): only rows where x != 0
    return {"W1": dW1.astype(params["W1"].dtype, copy=False), "W2": dW2.astype(W2.dtype, copy=False)}


def value(params: dict, Hs: np.ndarray) -> np.ndarray:
    """Learned baseline V(s_t) = h_t . Wv + bv, a linear head on the hidden layer: (T,)."""
    return Hs @ params["Wv"] + params["bv"]


def value_backward(Hs: np.ndarray, returns: np.ndarray, v: np.ndarray) -> dict:
    """Ascent direction on -1/2 sum_t (G_t - V_t)^2 for the value head (no gradient into W1)."""
    err = (returns - v).astype(Hs.dtype)   # (T,)
    return {"Wv": Hs.T @ err, "bv": np.asarray(err.sum(), Hs.dtype)}


# Batched forward for N envs at once (the fast path's act phase): same math as hidden/probs/sample/dlogp.

def hidden_batch(W1: np.ndarray, indptr: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """h_i = relu(x_i W1) for n sparse inputs in CSR form (indptr (n+1,), cols, vals): (n, H).

    Only the rows of W1 where some x_i != 0 are read (scipy's CSR product); an env with no
    non-zero input, e.g. on its first step, gets h = 0.
    """
    n, (D, H) = len(indptr) - 1, W1.shape
    data = vals.astype(W1.dtype)
    if _csr_matvecs is not None and W1.flags.c_contiguous:
        h = np.zeros((n, H), W1.dtype)                                          # (n, H)
        _csr_matvecs(n, D, H, np.asarray(indptr, np.int32), np.asarray(cols, np.int32), data, W1, h)
    else:
        h = np.asarray(sp.csr_matrix((data, cols, indptr), shape=(n, D)) @ W1)   # (n, H)
    return np.maximum(h, 0, out=h)


def sample_batch(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """Sampled output index per env, (n,): `sample` for each row, from one draw of n uniforms."""
    n = p.shape[0]
    u = rng.random(n).astype(p.dtype)   # `sample` compares a Python float with p in p's precision
    if p.ndim == 1:
        return (u >= p).astype(np.intp)
    a = (np.cumsum(p, axis=1) <= u[:, None]).sum(axis=1)
    return np.minimum(a, p.shape[1] - 1)


def dlogp_batch(p: np.ndarray, a: np.ndarray) -> np.ndarray:
    """d log pi(a_i) / d logit_i per env: (n,) for two actions, (n, 3) for three."""
    if p.ndim == 1:
        return (a == 0).astype(p.dtype) - p
    g = -p
    g[np.arange(len(a)), a] += 1.0
    return g
