"""Optimizers as pure functions: (params, grads, state) -> (params, state). Gradient *ascent*."""
import numpy as np


def init_state(name: str, params: dict) -> dict:
    """Zeroed optimizer memory: RMSProp's cache, or Adam's moments and step count."""
    if name == "rmsprop":
        return {f"cache.{k}": np.zeros_like(v) for k, v in params.items()}
    state = {f"m.{k}": np.zeros_like(v) for k, v in params.items()}
    state.update({f"v.{k}": np.zeros_like(v) for k, v in params.items()})
    state["t"] = np.zeros((), np.int64)
    return state


def rmsprop(params: dict, grads: dict, state: dict, lr: dict, decay_rate: float, eps: float):
    """cache = d cache + (1 - d) g^2;  theta += lr g / (sqrt(cache) + eps)."""
    new_params, new_state = {}, {}
    for k, g in grads.items():
        cache = decay_rate * state[f"cache.{k}"] + (1 - decay_rate) * g * g
        new_state[f"cache.{k}"] = cache.astype(g.dtype, copy=False)
        new_params[k] = (params[k] + lr[k] * g / (np.sqrt(cache) + eps)).astype(params[k].dtype, copy=False)
    return new_params, new_state


def adam(params: dict, grads: dict, state: dict, lr: dict, beta1: float, beta2: float, eps: float):
    """Adam with bias correction: theta += lr m_hat / (sqrt(v_hat) + eps)."""
    t = int(state["t"]) + 1
    new_params, new_state = {}, {"t": np.asarray(t, np.int64)}
    for k, g in grads.items():
        m = beta1 * state[f"m.{k}"] + (1 - beta1) * g
        v = beta2 * state[f"v.{k}"] + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        new_state[f"m.{k}"] = m.astype(g.dtype, copy=False)
        new_state[f"v.{k}"] = v.astype(g.dtype, copy=False)
        new_params[k] = (params[k] + lr[k] * m_hat / (np.sqrt(v_hat) + eps)).astype(params[k].dtype, copy=False)
    return new_params, new_state


def step(params: dict, grads: dict, state: dict, name: str, lr: float, value_lr: float, eps: float,
         decay_rate: float | None = None, beta1: float | None = None, beta2: float | None = None):
    """One update with optimizer `name` (rmsprop: decay_rate; adam: beta1, beta2); the value head
    (Wv, bv) moves with value_lr, every other parameter with lr."""
    rates = {k: (value_lr if k in ("Wv", "bv") else lr) for k in params}
    if name == "rmsprop":
        return rmsprop(params, grads, state, rates, decay_rate, eps)
    return adam(params, grads, state, rates, beta1, beta2, eps)
