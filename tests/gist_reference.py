"""An independent reference: the gist's loop for one env at a time, dense float64, RGB frames.

Written from the gist's description, sharing no code with pgpong: one gymnasium env per seed
(sticky actions off, so an env's frames depend only on its seed and actions), the gist's
preprocessing of the RGB frame, a dense forward pass, and the gist's backward pass. It does not
sample: it replays the actions pgpong chose, so what it computes for each step (input, hidden
state, P(UP), d log pi / d logit, reward, episode end) is what pgpong should have recorded.
"""
from dataclasses import dataclass, field

import gymnasium as gym
import ale_py
import numpy as np

gym.register_envs(ale_py)

GIST = {"H": 200, "batch_size": 10, "lr": 1e-4, "gamma": 0.99, "decay_rate": 0.99, "eps": 1e-5,
        "rows": (35, 195), "stride": 2, "background_red": (144, 109), "UP": 2, "DOWN": 3}


def prepro(frame: np.ndarray) -> np.ndarray:
    """(210, 160, 3) uint8 -> (6400,) float64: rows 35..194, every 2nd row and column, red
    channel; the two background reds become 0, then every non-zero value 1."""
    top, bottom = GIST["rows"]
    red = frame[top:bottom:GIST["stride"], ::GIST["stride"], 0].astype(np.float64)
    for bg in GIST["background_red"]:
        red[red == bg] = 0.0
    red[red != 0] = 1.0
    return red.ravel()


def discounted(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Returns summed backwards, restarted after every point (a non-zero reward)."""
    out = np.zeros(len(rewards))
    acc = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + (0.0 if rewards[t] != 0 else gamma * acc)
        out[t] = acc
    return out


@dataclass
class Episode:
    """One env's episode as the gist sees it, one entry per agent step."""
    xs: list = field(default_factory=list)       # (6400,) float64 inputs
    hs: list = field(default_factory=list)       # (H,) hidden states
    p_up: list = field(default_factory=list)     # P(UP)
    dlogps: list = field(default_factory=list)   # y - P(UP), y = 1 for UP
    rewards: list = field(default_factory=list)
    ended: bool = False                          # the env reported terminated or truncated

    def __len__(self) -> int:
        return len(self.rewards)

    def gradient(self, W1: np.ndarray, W2: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
        """The gist's policy gradient of this episode, (dW1 (H, D), dW2 (H,)) for W1 of shape (H, D)."""
        G = discounted(np.asarray(self.rewards), gamma)
        adv = (G - G.mean()) / G.std()
        dlogit = np.asarray(self.dlogps) * adv                 # (T,)
        eph, epx = np.vstack(self.hs), np.vstack(self.xs)     # (T, H), (T, D)
        dW2 = eph.T @ dlogit
        dh = np.outer(dlogit, W2)
        dh[eph <= 0] = 0
        return dh.T @ epx, dW2


def play(env_id: str, seed: int, actions, W1: np.ndarray, W2: np.ndarray, max_episode_steps: int) -> list[Episode]:
    """The gist's loop for one env on the given actions (2 = UP, 3 = DOWN), W1 of shape (H, D).

    The env is seeded once; after an episode ends it is reset without a seed and the next
    input is zero (no previous frame). Returns the episodes in order, the last one unfinished
    unless the actions ran out exactly at an episode's end.
    """
    env = gym.make(env_id, repeat_action_probability=0.0, max_episode_steps=max_episode_steps)
    try:
        obs, _ = env.reset(seed=int(seed))
        prev = None
        episodes = [Episode()]
        for a in actions:
            cur = prepro(obs)
            x = cur - prev if prev is not None else np.zeros_like(cur)
            prev = cur
            h = np.maximum(W1 @ x, 0.0)
            p = 1.0 / (1.0 + np.exp(-(W2 @ h)))
            ep = episodes[-1]
            ep.xs.append(x), ep.hs.append(h), ep.p_up.append(p)
            ep.dlogps.append((1.0 if a == GIST["UP"] else 0.0) - p)
            obs, r, terminated, truncated, _ = env.step(int(a))
            ep.rewards.append(float(r))
            if terminated or truncated:
                ep.ended = True
                episodes.append(Episode())
                obs, _ = env.reset()
                prev = None
        return episodes
    finally:
        env.close()
