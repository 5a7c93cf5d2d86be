"""Peak memory of the real trainer with 16 envs whose episodes all last 20,000 steps at once.

    python benchmarks/memory.py                      # 16 envs x 20,000 steps, default config (H=200, float32)
    python benchmarks/memory.py --envs 16 --steps 20000 --json /tmp/memory.json

A real Pong episode ends at 21 points (a few thousand steps), so long episodes are forced with
a synthetic environment: `SyntheticEnvs` draws Pong-like grayscale frames (background gray 87,
two moving paddles and a moving ball, so each input has a few dozen non-zeros like the real
game's) and ends every env's episode at exactly `--steps` steps, all envs of a group at the same
step, the worst case: 16 x 20,000 steps in flight, then 16 episode gradients. The envs are laid
out in `env.groups` groups stepped in turn, as the trainer does on the vector path. Everything
else is the real `pgpong.engine.trainer.train` with the default config (rollout buffers, gradients,
RMSProp updates), no tracking. Prints the peak resident set size (ru_maxrss) and writes it as JSON.
"""
import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pgpong import bench  # noqa: E402
from pgpong.engine.trainer import train  # noqa: E402
from pgpong.errors import entry_point  # noqa: E402
from pgpong.tracking.tracker import NullTracker  # noqa: E402


class SyntheticGroup:
    """n Pong-like grayscale screens; every episode lasts exactly `steps` steps; a point every 97 steps."""

    def __init__(self, n: int, steps: int, rng: np.random.Generator):
        self.num_envs, self.steps, self.rng = n, steps, rng
        self.t = 0
        self.phase = self.rng.integers(0, 1000, size=n)

    def _frames(self) -> np.ndarray:
        f = np.full((self.num_envs, 210, 160), 87, np.uint8)       # background
        f[:, 24:34] = 236                                           # top wall
        f[:, 194:210] = 236                                         # bottom wall
        for i, ph in enumerate((self.phase + self.t).tolist()):
            by, bx = 40 + (ph * 3) % 150, 20 + (ph * 2) % 120       # ball
            f[i, by:by + 4, bx:bx + 2] = 236
            py = 40 + (ph * 5) % 140                                # our paddle
            f[i, py:py + 16, 140:144] = 147
            oy = 40 + (ph * 7) % 140                                # opponent paddle
            f[i, oy:oy + 16, 16:20] = 148
        return f

    def reset(self) -> np.ndarray:
        self.t = 0
        return self._frames()

    def send(self, actions) -> None:
        self._actions = actions

    def recv(self):
        self.t += 1
        rewards = np.zeros(self.num_envs)
        if self.t % 97 == 0:
            rewards[:] = self.rng.choice([-1.0, 1.0], size=self.num_envs)
        dones = np.full(self.num_envs, self.t % self.steps == 0)
        return self._frames(), rewards, dones

    def cancel(self) -> None:
        pass


class SyntheticEnvs:
    """`n` synthetic envs in `groups` groups stepped in turn, as the trainer lays out the vector path."""

    def __init__(self, n: int, steps: int, groups: int = 1, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.num_envs = n
        self.groups = [SyntheticGroup(n // groups, steps, rng) for _ in range(groups)]

    def close(self) -> None:
        pass


@entry_point
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20_000, help="steps of every episode")
    ap.add_argument("--json", default=None)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. H=200")
    args = ap.parse_args(argv)
    cfg = bench.compose([f"episodes={args.envs}", f"env.num_envs={args.envs}", *args.overrides])
    rng = np.random.default_rng(cfg.seed)
    envs = SyntheticEnvs(args.envs, args.steps, cfg.env.groups)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with threadpool_limits(limits=1), tempfile.TemporaryDirectory() as out:
        summary = train(cfg, envs, NullTracker(), rng, out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"envs": args.envs, "groups": cfg.env.groups, "episode_steps": args.steps, "episodes": summary["episodes"],
              "agent_steps": summary["steps"], "H": cfg.H, "dtype": cfg.dtype, "D": int(6400),
              "peak_rss_mb": round(peak, 1), "rss_before_training_mb": round(base, 1),
              "seconds": round(time.perf_counter() - t0, 1), "limit_mb": 1536, "under_limit": peak < 1536}
    print(f"memory: {args.envs} envs in {cfg.env.groups} groups x {args.steps:,}-step episodes (synthetic frames, "
          f"real trainer, H={cfg.H}, {cfg.dtype}): peak RSS {peak:,.0f} MB (before training {base:,.0f} MB), limit 1,536 MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if peak < 1536 else 1


if __name__ == "__main__":
    sys.exit(main())
