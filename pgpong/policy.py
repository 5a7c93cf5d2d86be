"""The policy network, forward and backward side by side.

    h     = relu(x W1)          x: (D,) input, W1: (D, H)   (the gist's W1 transposed)
    two:   p = sigmoid(h . W2)  W2: (H,)    p = P(UP)
    three: p = softmax(h W2)    W2: (H, 3)  over (UP, DOWN, NOOP)

For a whole episode of T steps, X is the (T, D) input matrix (scipy CSR: inputs are sparse),
Hs the (T, H) hidden states and dlogit the gradient of the log-likelihood of the sampled
actions with respect to the logits, already multiplied by the advantage.
"""
import numpy as np

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
