"""Throughput: the pgpong trainer against the emulator-only ceiling and the gist's own loop.

    python -m pgpong.bench                                  # 3 repeats x 20 s of each, interleaved
    python -m pgpong.bench --seconds 5 --repeats 1 --json /tmp/bench.json
    python -m pgpong.bench env.num_envs=8                   # any config override (Hydra syntax)

In one process, each repeat runs, one after another for `--seconds` each:
  ceiling        the same emulators (id, frameskip, sticky actions, num_envs) stepped with random
                 UP/DOWN actions, no learning, in up to three layouts: as the trainer steps them
                 (`env.groups` vector envs of `env.num_threads` threads, in turn), as one vector
                 env of all `num_envs` on a thread per core, and as one single-threaded vector env
                 per core, in turn (when the envs divide among the cores and the trainer's layout
                 is not that already); the ceiling of a repeat is the fastest, so a layout that
                 slows the emulators down cannot flatter the ratio;
  gist           the gist's loop as the gist runs it (`run_gist`): one gymnasium env, float64 dense
                 matrices, numpy's default BLAS threads, on ALE/Pong-v5 and on its own Pong-v0;
  trainer        the real `pgpong.engine.trainer.train` on the composed config, no tracking, one BLAS thread;
and then, timed from launch to exit (not for `--seconds`):
  whole process  `python -m pgpong.run <overrides> episodes=<--run-episodes>` in a fresh folder:
                 start-up, MLflow tracking, checkpoints and the model file included.
Prints medians over repeats of agent steps/s and emulator frames/s and the ratios trainer/ceiling,
trainer/gist, whole process/gist (gist: its loop on the trainer's env id) and whole process/trainer
(what start-up, tracking and checkpoints cost), and writes them
(with every repeat's steps, seconds and frames) as JSON.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
from threadpoolctl import threadpool_limits

from pgpong import launch
from pgpong.engine.checkpoint import CKPT_RE, list_checkpoints
from pgpong.engine.envs import draw_env_seeds, emulator_threads, make_envs, usable_cores, vector_settings
from pgpong.engine.progress import Progress
from pgpong.errors import PgpongError, entry_point
from pgpong.tracking.tracker import NullTracker

CEILINGS = ("ceiling_as_trained", "ceiling_one_env", "ceiling_per_core")   # the ceiling is the maximum of those run


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

    def describe(self) -> dict:
        return self.envs.describe()


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
    """The run's config, composed and validated as `python -m pgpong.run` does, without tracking."""
    return launch.compose(["tracking=none", *overrides])


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
    """cfg with all its envs in one vector env on a thread per core (or cfg's threads, if more):
    the emulators' own best layout, whatever threads the trainer is given."""
    one = cfg.copy()
    one.env.groups = 1
    one.env.num_threads = max(emulator_threads(cfg.env), os.cpu_count() or 1)
    return one


def per_core_layout(cfg):
    """cfg with a single-threaded vector env per usable core, stepped in turn; None when the envs
    do not divide among the cores or cfg is laid out so already."""
    cores = usable_cores()
    if cores < 2 or cfg.env.num_envs % cores or (cfg.env.groups == cores and emulator_threads(cfg.env) == 1):
        return None
    per = cfg.copy()
    per.env.groups, per.env.num_threads = cores, 1
    return per


def ceiling_kinds(cfg) -> tuple[str, ...]:
    """The ceiling layouts a bench of cfg runs (vector envs only: gymnasium envs have one layout)."""
    if not cfg.env.vector:
        return CEILINGS[:1]
    return (("ceiling_as_trained",) + (("ceiling_one_env",) if cfg.env.groups > 1 else ())
            + (("ceiling_per_core",) if per_core_layout(cfg) else ()))


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


GIST_IDS = {"gist_v5": "ALE/Pong-v5", "gist_v0": "Pong-v0"}   # the gist's loop on today's env and on its own


def run_gist(cfg, seconds: float, env_id: str) -> tuple[int, float, int]:
    """(agent steps, seconds, emulator frames) of the gist's loop as the gist runs it, on env_id.

    One gymnasium env made with the id's own settings, numpy's default BLAS threads (the caller
    sets no limit), the gist's crop (rows 35..194, every 2nd row and column, red channel) and its
    float64 dense network (W1 as (H, D)): per step a dense forward pass and float64 copies of the
    input and hidden state kept for the episode; per episode the discounted, standardized returns
    and a dense backward pass; RMSProp every batch_size episodes. H, batch_size, lr, gamma and
    decay_rate are cfg's (the gist's by default). Left out: the gist's printing and its pickle
    every 100 episodes. The Python 3 / gymnasium changes are the comment thread's.
    """
    rng = np.random.default_rng(cfg.seed)
    H, D = cfg.H, 80 * 80
    model = {"W1": rng.standard_normal((H, D)) / np.sqrt(D), "W2": rng.standard_normal(H) / np.sqrt(H)}
    grad_sum = {k: np.zeros_like(w) for k, w in model.items()}
    rms = {k: np.zeros_like(w) for k, w in model.items()}

    def frame_vector(frame: np.ndarray) -> np.ndarray:
        f = frame[35:195:2, ::2, 0]                 # a view: the observation is overwritten, as in the gist
        f[(f == 144) | (f == 109)] = 0
        f[f != 0] = 1
        return f.astype(np.float64).ravel()

    def returns_of(rewards: np.ndarray) -> np.ndarray:
        G, acc = np.zeros_like(rewards), 0.0
        for t in range(len(rewards) - 1, -1, -1):
            acc = rewards[t] if rewards[t] != 0 else acc * cfg.gamma   # a point restarts the sum
            G[t] = acc
        return G

    with warnings.catch_warnings():           # gymnasium calls Pong-v0 out of date: it is the gist's env
        warnings.simplefilter("ignore", DeprecationWarning)
        env = gym.make(env_id)
    ale = env.unwrapped.ale
    obs, _ = env.reset(seed=env_seeds(cfg)[0])
    prev, xs, hs, dlogps, rewards = None, [], [], [], []
    episode, steps, frames0 = 0, 0, ale.getFrameNumber()
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            cur = frame_vector(obs)
            x = cur - prev if prev is not None else np.zeros(D)
            prev = cur
            h = np.dot(model["W1"], x)
            h[h < 0] = 0
            p_up = 1.0 / (1.0 + np.exp(-np.dot(model["W2"], h)))
            action = 2 if rng.random() < p_up else 3
            xs.append(x)
            hs.append(h)
            dlogps.append((1.0 if action == 2 else 0.0) - p_up)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            steps += 1
            if terminated or truncated:
                episode += 1
                epx, eph = np.vstack(xs), np.vstack(hs)
                G = returns_of(np.array(rewards, np.float64))
                G = (G - G.mean()) / G.std()
                dlogit = np.array(dlogps) * G
                dh = np.outer(dlogit, model["W2"])
                dh[eph <= 0] = 0
                grad_sum["W1"] += np.dot(dh.T, epx)
                grad_sum["W2"] += np.dot(eph.T, dlogit)
                if episode % cfg.batch_size == 0:
                    for k, w in model.items():
                        rms[k] = cfg.decay_rate * rms[k] + (1 - cfg.decay_rate) * grad_sum[k] ** 2
                        w += cfg.lr * grad_sum[k] / (np.sqrt(rms[k]) + 1e-5)
                        grad_sum[k] = np.zeros_like(w)
                xs, hs, dlogps, rewards = [], [], [], []
                obs, _ = env.reset()
                prev = None
        return steps, time.perf_counter() - t0, ale.getFrameNumber() - frames0
    finally:
        env.close()


def run_whole_process(overrides, episodes: int) -> tuple[int, float]:
    """(agent steps, seconds) of `python -m pgpong.run episodes=<episodes> <overrides>` in a fresh
    folder, timed from launch to exit: start-up, tracking (MLflow in ./mlflow.db unless the
    overrides say otherwise), checkpoints and the model file included. The steps are read from
    the run's last checkpoint (its file name counts them)."""
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pgpong.run", *overrides, f"episodes={episodes}"], cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise PgpongError(f"whole-process run: python -m pgpong.run exited {proc.returncode}: {last}")
        ckpts = [p for d in Path(folder).glob("outputs/*/*/checkpoints") for p in list_checkpoints(d)]
        if not ckpts:
            raise PgpongError("whole-process run: python -m pgpong.run wrote no checkpoint to count its steps")
        return max(int(CKPT_RE.match(p.name).group(2)) for p in ckpts), dt


def run_trainer(cfg, seconds: float) -> tuple[int, float]:
    """(agent steps, seconds) of the real trainer on cfg, stopped after `seconds` of stepping."""
    envs = timed_trainer(cfg, seconds)
    return envs.steps, envs.t1 - envs.t0


def timed_trainer(cfg, seconds: float) -> TimedEnvs:
    """The real trainer on cfg for `seconds` of stepping; its (closed) TimedEnvs hold the counts."""
    with launch.start(cfg) as begun, tempfile.TemporaryDirectory() as out, open(os.devnull, "w") as devnull:
        timed = begun.envs = TimedEnvs(begun.envs, seconds)      # started as pgpong.run starts a run
        try:
            launch.train_run(cfg, begun, NullTracker(), out, progress=Progress(cfg.episodes, 1e9, stream=devnull))
        except _Stop:
            pass
    return timed


RUNNERS = {"ceiling_as_trained": run_ceiling, "ceiling_one_env": lambda cfg, s: run_ceiling(one_env_layout(cfg), s),
           "ceiling_per_core": lambda cfg, s: run_ceiling(per_core_layout(cfg), s),
           "gist_v5": lambda cfg, s: run_gist(cfg, s, GIST_IDS["gist_v5"]),
           "gist_v0": lambda cfg, s: run_gist(cfg, s, GIST_IDS["gist_v0"]),
           "trainer": run_trainer}
OWN_THREADS = ("gist_v5", "gist_v0")   # run with numpy's default BLAS threads, as the gist runs
ROW_NAMES = {"ceiling_as_trained": "- as trained", "ceiling_one_env": "- one vector env",
             "ceiling_per_core": "- one env per core",
             "gist_v5": "gist, ALE/Pong-v5", "gist_v0": "gist, Pong-v0", "whole_process": "whole process"}


def gist_row(cfg) -> str:
    """The gist row the trainer is compared with: the gist's loop on the trainer's env id."""
    return "gist_v0" if cfg.env.id == GIST_IDS["gist_v0"] else "gist_v5"


def bench(cfg, seconds: float, repeats: int, log=sys.stderr, overrides=(), run_episodes: int = 0) -> dict:
    """Interleaved repeats of every kind; the table as a dict (per-repeat rates and medians).

    run_episodes > 0 adds the whole-process row: `python -m pgpong.run` with `overrides`, from
    launch to `run_episodes` episodes, once per repeat.
    """
    frameskip = frameskip_of(cfg)
    ceilings = ceiling_kinds(cfg)
    runs = (*ceilings, *GIST_IDS, "trainer") + (("whole_process",) if run_episodes > 0 else ())
    load_before = os.getloadavg()[0]
    per = {k: [] for k in runs}
    raw = {k: [] for k in runs}          # (agent steps, seconds, emulator frames or None) per repeat
    for r in range(repeats):
        for kind in runs:
            if kind == "whole_process":
                out = run_whole_process(overrides, run_episodes)
            elif kind in OWN_THREADS:
                out = RUNNERS[kind](cfg, seconds)
            else:
                with threadpool_limits(limits=1):      # BLAS threads would fight the emulators for 2 cores
                    out = RUNNERS[kind](cfg, seconds)
            steps, dt = out[:2]
            frames = out[2] if len(out) > 2 else (steps * frameskip if frameskip else None)
            raw[kind].append({"steps": steps, "seconds": dt, "frames": frames})
            per[kind].append(steps / dt)
            print(f"repeat {r + 1}/{repeats}  {kind:18s} {steps / dt:9,.0f} agent steps/s", file=log, flush=True)
    per["ceiling"] = [max(rates) for rates in zip(*(per[k] for k in ceilings))]
    table = {}
    for kind in ("ceiling", *runs):
        med = statistics.median(per[kind])
        row = {"steps_per_s": per[kind], "steps_per_s_median": med}
        if kind == "ceiling":
            row["frames_per_s_median"] = med * frameskip if frameskip else None
        else:
            row["runs"] = raw[kind]
            fps = [x["frames"] / x["seconds"] for x in raw[kind] if x["frames"] is not None]
            row["frames_per_s_median"] = statistics.median(fps) if len(fps) == repeats else None
        table[kind] = row
    gist = gist_row(cfg)
    over = {"trainer_over_ceiling": ("trainer", "ceiling"), "trainer_over_gist": ("trainer", gist)}
    if run_episodes > 0:
        over["whole_process_over_gist"] = ("whole_process", gist)
        over["whole_process_over_trainer"] = ("whole_process", "trainer")
    return {
        "table": table,
        "ratios_per_repeat": {k: [a / b for a, b in zip(per[x], per[y])] for k, (x, y) in over.items()},
        "ratios": {k: table[x]["steps_per_s_median"] / table[y]["steps_per_s_median"] for k, (x, y) in over.items()},
        "settings": {"seconds": seconds, "repeats": repeats, "env.id": cfg.env.id, "env.vector": cfg.env.vector,
                     "env.num_envs": cfg.env.num_envs, "env.num_threads": emulator_threads(cfg.env) if cfg.env.vector else cfg.env.num_threads,   # per group, as used
                     "one_env.num_threads": one_env_layout(cfg).env.num_threads,
                     "env.groups": cfg.env.groups if cfg.env.vector else None,
                     "frameskip": frameskip, "H": cfg.H, "dtype": cfg.dtype, "input.kind": cfg.input.kind,
                     "gist.env_ids": GIST_IDS, "gist.num_envs": 1, "gist.blas_threads": "numpy's default",
                     "gist_row": gist, "whole_process.episodes": run_episodes or None,
                     "blas_threads": 1, "cpu_count": os.cpu_count(),
                     "load_average_1min": [load_before, os.getloadavg()[0]],   # before and after: quote quiet runs only
                     "machine": platform.machine(), "python": platform.python_version()},
    }


def format_table(result: dict) -> str:
    s = result["settings"]
    groups = s["env.groups"] or 1
    threads = f"{s['env.num_threads']} thread{'s' if s['env.num_threads'] != 1 else ''}"
    layout = (f"{groups} vector envs x {s['env.num_envs'] // groups} envs, {threads} each"
              if groups > 1 else f"{s['env.num_envs']} envs on {threads}")
    lines = [f"pgpong.bench: {s['env.id']}, frameskip {s['frameskip']}, {layout} (gist: 1 env, default BLAS threads); "
             f"medians of {s['repeats']} x {s['seconds']:g} s",
             f"| {'run':18s} | {'agent steps/s':>13s} | {'frames/s':>9s} |",
             f"|{'-' * 20}|{'-' * 15}|{'-' * 11}|"]
    table = result["table"]
    ran = [k for k in CEILINGS if k in table]
    sub_rows = ran if len(ran) > 1 else ()
    rows = ("ceiling", *sub_rows, *GIST_IDS, "trainer") + (("whole_process",) if "whole_process" in table else ())
    for kind in rows:
        row = table[kind]
        frames = f"{row['frames_per_s_median']:,.0f}" if row["frames_per_s_median"] else "n/a"
        lines.append(f"| {ROW_NAMES.get(kind, kind):18s} | {row['steps_per_s_median']:13,.0f} | {frames:>9s} |")
    r, pr = result["ratios"], result["ratios_per_repeat"]
    fmt = lambda xs: ", ".join(f"{x:.2f}" for x in xs)
    gist = ROW_NAMES[s["gist_row"]]
    names = {"trainer_over_ceiling": "trainer / ceiling", "trainer_over_gist": f"trainer / {gist}",
             "whole_process_over_gist": f"whole process / {gist}", "whole_process_over_trainer": "whole process / trainer"}
    lines.append("   ".join(f"{names[k]} = {v:.2f}" for k, v in r.items()) + "   (ratios of the medians)")
    lines.append("per repeat: " + "; ".join(f"{names[k]} {fmt(v)}" for k, v in pr.items()))
    if sub_rows:
        layouts = {"ceiling_as_trained": f"as trained ({threads} per vector env)",
                   "ceiling_one_env": f"in one vector env ({s['one_env.num_threads']} threads)",
                   "ceiling_per_core": "in one single-threaded vector env per core"}
        lines.append("ceiling per repeat: the fastest of the emulators " + ", ".join(layouts[k] for k in sub_rows))
    before, after = s["load_average_1min"]
    lines.append(f"1-minute load average before / after: {before:.1f} / {after:.1f} on {s['cpu_count']} cores "
                 f"(the gist rows, on numpy's default BLAS threads, slow down many times on a busy machine)")
    if "whole_process" in table:
        lines.append(f"whole process: python -m pgpong.run episodes={s['whole_process.episodes']} from launch to exit "
                     f"(start-up, tracking, checkpoints included)")
    return "\n".join(lines)


@entry_point
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pgpong.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of each run (default 20)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    ap.add_argument("--json", default="bench.json", help="where to write the table (default ./bench.json)")
    ap.add_argument("--run-episodes", type=int, default=400,
                    help="episodes of the whole-process row, python -m pgpong.run timed from launch (default 400; 0: no row)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. env.num_envs=8")
    args = ap.parse_args(argv)
    if not args.seconds > 0:
        raise PgpongError(f"--seconds={args.seconds}: must be > 0")
    if args.repeats < 1:
        raise PgpongError(f"--repeats={args.repeats}: must be >= 1")
    if args.run_episodes < 0:
        raise PgpongError(f"--run-episodes={args.run_episodes}: must be >= 0")
    cfg = compose(args.overrides)
    result = bench(cfg, args.seconds, args.repeats, overrides=args.overrides, run_episodes=args.run_episodes)
    print(format_table(result))
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
