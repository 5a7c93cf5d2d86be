"""Throughput: the pgpong trainer against the emulator-only ceiling and a naive per-step loop.

    python -m pgpong.bench                                  # 3 repeats x 20 s of each, interleaved
    python -m pgpong.bench --seconds 5 --repeats 1 --json /tmp/bench.json
    python -m pgpong.bench env.num_envs=8                   # any config override (Hydra syntax)

In one process, each repeat runs, one after another for `--seconds` each:
  ceiling  the same emulators (id, frameskip, sticky actions, num_envs) stepped with random
           UP/DOWN actions, no learning, in two layouts: as the trainer steps them (`env.groups`
           vector envs of `env.num_threads` threads, in turn) and as one vector env of all
           `num_envs` on `num_threads` threads; the ceiling of a repeat is the faster of the two,
           so a layout that slows the emulators down cannot flatter the ratio;
  naive    one gymnasium env with the same id/frameskip/sticky settings and the gist's structure:
           dense float64 forward per step, float64 per-step buffers, dense backward per episode,
           RMSProp every batch_size episodes;
  trainer  the real `pgpong.engine.trainer.train` on the composed config (default: the defaults), no tracking.
Prints medians over repeats of agent steps/s and emulator frames/s and the ratios
trainer/ceiling and trainer/naive, and writes them (with every repeat) as JSON.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from pgpong import config
from pgpong.engine.envs import (
    draw_env_seeds,
    make_envs,
    make_one,
    seeded_envs,
    vector_settings,
)
from pgpong.engine.progress import Progress
from pgpong.errors import PgpongError
from pgpong.paths import CONF_DIR
from pgpong.tracking.tracker import NullTracker

KINDS = ("ceiling", "naive", "trainer")
CEILINGS = ("ceiling_as_trained", "ceiling_one_env")   # the ceiling is their maximum


class _Stop(Exception):
    """Raised inside the trainer's loop when the time is up."""


class TimedEnvs:
    """Forwards to real envs (group by group), counts agent steps, stops the run after `seconds`.

    t0/t1: wall clock at the first send and the last recv; cpu0/cpu1: this thread's CPU time then.
    """

    def __init__(self, envs, seconds: float):
        self.envs, self.seconds = envs, seconds
        self.num_envs = envs.num_envs
        self.groups = [_TimedGroup(self, g) for g in envs.groups]
        self.steps = 0
        self.t0 = self.t1 = self.cpu0 = self.cpu1 = None

    def close(self):
        self.envs.close()


class _TimedGroup:
    def __init__(self, timer: TimedEnvs, group):
        self.timer, self.group, self.num_envs = timer, group, group.num_envs

    def reset(self):
        return self.group.reset()

    def send(self, actions):
        if self.timer.t0 is None:                    # from the first step on: set-up not counted
            self.timer.t0, self.timer.cpu0 = time.perf_counter(), time.thread_time()
        self.group.send(actions)

    def cancel(self):
        self.group.cancel()

    def recv(self):
        out = self.group.recv()
        t = self.timer
        t.steps += self.num_envs
        t.t1, t.cpu1 = time.perf_counter(), time.thread_time()
        if t.t1 - t.t0 >= t.seconds:
            raise _Stop
        return out


def compose(overrides=()):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    config.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name="config", overrides=["tracking=none", *overrides])
    config.validate(cfg)
    return cfg


def env_seeds(cfg) -> list[int]:
    """The env seeds a run of cfg draws (see envs.seeded_envs)."""
    return draw_env_seeds(np.random.default_rng(cfg.seed), cfg.env.num_envs)


def frameskip_of(cfg):
    """Fixed frames per agent step of the configured env, or None when it is random (v0)."""
    try:
        return vector_settings(cfg.env)["frameskip"]
    except PgpongError:
        return None


def one_env_layout(cfg):
    """cfg with all its envs in one vector env (the emulators' own best layout when it is faster)."""
    one = cfg.copy()
    one.env.groups = 1
    return one


def run_ceiling(cfg, seconds: float) -> tuple[int, float]:
    """(agent steps, seconds): the configured emulators stepped with random UP/DOWN actions.

    Same adapter and groups as cfg's envs, each group restarted as soon as it is collected (as
    the trainer does), without any learning work in between.
    """
    rng = np.random.default_rng(cfg.seed)
    envs = make_envs(cfg.env, env_seeds(cfg))
    groups = envs.groups
    try:
        for g in groups:
            g.reset()
        steps, t0 = 0, time.perf_counter()
        for g in groups:
            g.send(rng.integers(2, 4, size=g.num_envs))      # 2 = UP, 3 = DOWN
        while time.perf_counter() - t0 < seconds:
            for g in groups:
                g.recv()
                g.send(rng.integers(2, 4, size=g.num_envs))
                steps += g.num_envs
        dt = time.perf_counter() - t0
        for g in groups:
            g.recv()
        return steps, dt
    finally:
        envs.close()


def run_naive(cfg, seconds: float) -> tuple[int, float]:
    """(agent steps, seconds) of the gist's loop structure: one env, dense float64, per-episode backward."""
    rng = np.random.default_rng(cfg.seed)
    crop = cfg.crop
    rows = len(range(crop.top, crop.bottom, crop.stride))
    D, H = rows * len(range(crop.left, crop.right, crop.stride)), cfg.H
    W1 = rng.standard_normal((H, D)) / np.sqrt(D)          # (H, D) float64, the gist's orientation
    W2 = rng.standard_normal(H) / np.sqrt(H)
    grad = {"W1": np.zeros_like(W1), "W2": np.zeros_like(W2)}
    cache = {"W1": np.zeros_like(W1), "W2": np.zeros_like(W2)}
    env = make_one(cfg.env)
    obs, _ = env.reset(seed=env_seeds(cfg)[0])

    def frame_vector(frame):                               # crop, stride, channel 0, background 0, else 1
        f = frame[crop.top:crop.bottom:crop.stride, crop.left:crop.right:crop.stride, 0].astype(np.float64)
        f[(f == 144) | (f == 109)] = 0
        f[f != 0] = 1
        return f.ravel()

    prev = None
    xs, hs, dlogps, rs = [], [], [], []
    episode, steps, t0 = 0, 0, time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            cur = frame_vector(obs)
            x = cur - prev if prev is not None else np.zeros(D)
            prev = cur
            h = np.maximum(W1 @ x, 0)                      # dense (H, D) @ (D,)
            p = 1.0 / (1.0 + np.exp(-(W2 @ h)))
            up = rng.random() < p
            xs.append(x); hs.append(h); dlogps.append((1.0 if up else 0.0) - p)
            obs, r, terminated, truncated, _ = env.step(2 if up else 3)
            rs.append(r)
            steps += 1
            if terminated or truncated:
                episode += 1
                epx, eph, epdlogp, epr = np.vstack(xs), np.vstack(hs), np.array(dlogps), np.array(rs)
                G = np.zeros_like(epr)
                acc = 0.0
                for t in range(len(epr) - 1, -1, -1):      # discounted returns, reset at every point
                    acc = epr[t] if epr[t] != 0 else acc * cfg.gamma
                    G[t] = acc
                G = (G - G.mean()) / (G.std() + 1e-8)
                epdlogp = epdlogp * G
                grad["W2"] += eph.T @ epdlogp
                dh = np.outer(epdlogp, W2)
                dh[eph <= 0] = 0
                grad["W1"] += dh.T @ epx
                if episode % cfg.batch_size == 0:
                    for k, W in (("W1", W1), ("W2", W2)):
                        cache[k] = cfg.decay_rate * cache[k] + (1 - cfg.decay_rate) * grad[k] ** 2
                        W += cfg.lr * grad[k] / (np.sqrt(cache[k]) + 1e-5)
                        grad[k] = np.zeros_like(W)
                xs, hs, dlogps, rs = [], [], [], []
                obs, _ = env.reset()
                prev = None
        return steps, time.perf_counter() - t0
    finally:
        env.close()


def run_trainer(cfg, seconds: float) -> tuple[int, float]:
    """(agent steps, seconds) of the real trainer on cfg, stopped after `seconds` of stepping."""
    envs = timed_trainer(cfg, seconds)
    return envs.steps, envs.t1 - envs.t0


def timed_trainer(cfg, seconds: float) -> TimedEnvs:
    """The real trainer on cfg for `seconds` of stepping; its (closed) TimedEnvs hold the counts."""
    from pgpong.engine.trainer import train
    rng, envs = seeded_envs(cfg)                                  # as pgpong.run does
    envs = TimedEnvs(envs, seconds)
    try:
        with tempfile.TemporaryDirectory() as out, open(os.devnull, "w") as devnull:
            try:
                train(cfg, envs, NullTracker(), rng, out, progress=Progress(cfg.episodes, 1e9, stream=devnull))
            except _Stop:
                pass
        return envs
    finally:
        envs.close()


RUNNERS = {"ceiling_as_trained": run_ceiling, "ceiling_one_env": lambda cfg, s: run_ceiling(one_env_layout(cfg), s),
           "naive": run_naive, "trainer": run_trainer}


def bench(cfg, seconds: float, repeats: int, log=sys.stderr) -> dict:
    """Interleaved repeats of every kind; the table as a dict (per-repeat rates and medians)."""
    frameskip = frameskip_of(cfg)
    ceilings = CEILINGS if cfg.env.vector and cfg.env.groups > 1 else CEILINGS[:1]
    runs = (*ceilings, "naive", "trainer")
    per = {k: [] for k in runs}
    for r in range(repeats):
        for kind in runs:
            with threadpool_limits(limits=1):      # BLAS threads would fight the emulators for 2 cores
                steps, dt = RUNNERS[kind](cfg, seconds)
            per[kind].append(steps / dt)
            print(f"repeat {r + 1}/{repeats}  {kind:18s} {steps / dt:9,.0f} agent steps/s", file=log, flush=True)
    per["ceiling"] = [max(rates) for rates in zip(*(per[k] for k in ceilings))]
    table = {}
    for kind in (*KINDS, *ceilings):
        med = statistics.median(per[kind])
        table[kind] = {"steps_per_s": per[kind], "steps_per_s_median": med,
                       "frames_per_s_median": med * frameskip if frameskip else None}
    paired = {"trainer_over_ceiling": [t / c for t, c in zip(per["trainer"], per["ceiling"])],
              "trainer_over_naive": [t / nv for t, nv in zip(per["trainer"], per["naive"])]}
    return {
        "table": table,
        "ratios_per_repeat": paired,        # within one repeat the three runs are seconds apart
        "ratios": {"trainer_over_ceiling": table["trainer"]["steps_per_s_median"] / table["ceiling"]["steps_per_s_median"],
                   "trainer_over_naive": table["trainer"]["steps_per_s_median"] / table["naive"]["steps_per_s_median"]},
        "settings": {"seconds": seconds, "repeats": repeats, "env.id": cfg.env.id, "env.vector": cfg.env.vector,
                     "env.num_envs": cfg.env.num_envs, "env.num_threads": cfg.env.num_threads,
                     "env.groups": cfg.env.groups if cfg.env.vector else None,
                     "frameskip": frameskip, "H": cfg.H, "dtype": cfg.dtype, "input.kind": cfg.input.kind,
                     "naive.num_envs": 1, "blas_threads": 1, "cpu_count": os.cpu_count(),
                     "machine": platform.machine(), "python": platform.python_version()},
    }


def format_table(result: dict) -> str:
    s = result["settings"]
    groups = s["env.groups"] or 1
    layout = (f"{groups} vector envs x {s['env.num_envs'] // groups} envs, {s['env.num_threads']} threads each"
              if groups > 1 else f"{s['env.num_envs']} envs on {s['env.num_threads']} threads")
    lines = [f"pgpong.bench: {s['env.id']}, frameskip {s['frameskip']}, {layout} (naive: 1 env); "
             f"medians of {s['repeats']} x {s['seconds']:g} s",
             f"| {'run':18s} | {'agent steps/s':>13s} | {'frames/s':>9s} |",
             f"|{'-' * 20}|{'-' * 15}|{'-' * 11}|"]
    table = result["table"]
    sub_rows = CEILINGS if "ceiling_one_env" in table else ()
    for kind in ("ceiling", *sub_rows, "naive", "trainer"):
        row = table[kind]
        frames = f"{row['frames_per_s_median']:,.0f}" if row["frames_per_s_median"] else "n/a"
        name = {"ceiling_as_trained": "- as trained", "ceiling_one_env": "- one vector env"}.get(kind, kind)
        lines.append(f"| {name:18s} | {row['steps_per_s_median']:13,.0f} | {frames:>9s} |")
    r, pr = result["ratios"], result["ratios_per_repeat"]
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
    lines.append(f"trainer / ceiling = {r['trainer_over_ceiling']:.2f}   trainer / naive = {r['trainer_over_naive']:.2f}"
                 f"   (ratios of the medians)")
    lines.append(f"per repeat: trainer / ceiling {fmt(pr['trainer_over_ceiling'])}; trainer / naive {fmt(pr['trainer_over_naive'])}")
    if "ceiling_one_env" in table:
        lines.append(f"ceiling per repeat: the faster of the emulators as trained ({s['env.num_threads']} threads "
                     f"per vector env) and in one vector env ({s['env.num_threads']} threads)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pgpong.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of each run (default 20)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    ap.add_argument("--json", default="bench.json", help="where to write the table (default ./bench.json)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. env.num_envs=8")
    args = ap.parse_args(argv)
    try:
        if not args.seconds > 0:
            raise PgpongError(f"--seconds={args.seconds}: must be > 0")
        if args.repeats < 1:
            raise PgpongError(f"--repeats={args.repeats}: must be >= 1")
        cfg = compose(args.overrides)
        result = bench(cfg, args.seconds, args.repeats)
    except PgpongError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
