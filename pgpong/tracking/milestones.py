"""Time to a running reward: when a run first reached -10, 0 and +10, kept in the run's own MLflow record.

Counted as pgpong.report counts them (pgpong/report/data.py): the episode at which the running
reward is first >= the threshold, the wall-clock from the MLflow run's start to that episode's
metric (a resumed run's time stopped included), and the agent steps of all finished episodes
until then.
"""
import numpy as np

THRESHOLDS = (-10.0, 0.0, 10.0)   # 0: the agent scores as many points as the built-in AI


def crossings(episodes, running, seconds, steps, thresholds=THRESHOLDS) -> dict:
    """{threshold: (episode, seconds, steps) of the first episode whose running reward is >= it, or None}.

    episodes, running, seconds, steps: (N,) per finished episode, in order.
    """
    running = np.asarray(running, float)
    out = {}
    for t in thresholds:
        hit = np.flatnonzero(running >= t)
        i = hit[0] if hit.size else None
        out[t] = None if i is None else (int(episodes[i]), float(seconds[i]), int(steps[i]))
    return out


def as_metrics(crossed: dict) -> dict:
    """{"time_to/<t>/episodes|seconds|steps": value} for the thresholds reached."""
    out = {}
    for t, hit in crossed.items():
        if hit is not None:
            episode, seconds, steps = hit
            out.update({f"time_to/{t:g}/episodes": episode, f"time_to/{t:g}/seconds": round(seconds, 1),
                        f"time_to/{t:g}/steps": steps})
    return out


def as_line(crossed: dict) -> str:
    """One line for the terminal: where each threshold was reached, or that it was not."""
    parts = []
    for t, hit in crossed.items():
        if hit is None:
            parts.append(f"{t:+g} not reached")
        else:
            episode, seconds, steps = hit
            parts.append(f"{t:+g} at episode {episode:,} ({seconds / 60:.1f} min, {steps / 1e6:.2f}M steps)")
    return "running reward " + "; ".join(parts)
