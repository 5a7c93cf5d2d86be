"""Returns and advantages: discounting with a reset at every point, and the baselines."""
import numpy as np


def discount(r: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma G_{t+1}, restarting at every non-zero reward (a Pong point ends there)."""
    G = np.zeros(len(r), np.float64)
    running = 0.0
    for t in range(len(r) - 1, -1, -1):
        if r[t] != 0:
            running = 0.0
        running = running * gamma + r[t]
        G[t] = running
    return G


def standardize(G: np.ndarray) -> np.ndarray:
    """(G - mean) / std over the episode, as the gist; std 0 (all returns equal) gives zeros."""
    centred = G - G.mean()
    std = G.std()
    return centred / std if std > 0 else centred


def advantages(G: np.ndarray, kind: str, v: np.ndarray | None = None) -> np.ndarray:
    """The weight of each step's log-likelihood gradient, for baseline `kind`."""
    if kind == "standardize":
        return standardize(G)
    if kind == "none":
        return G
    if kind == "mean":
        return G - G.mean()
    if kind == "value":
        return G - v
    raise ValueError(f"unknown baseline {kind!r}")


def running_mean(running: float | None, reward: float, decay: float = 0.99) -> float:
    """The gist's exponential moving average of episode rewards, started at the first one."""
    return reward if running is None else decay * running + (1 - decay) * reward
