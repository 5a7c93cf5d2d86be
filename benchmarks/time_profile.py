"""Where the trainer's time goes: main-thread CPU per agent step, and its parts under cProfile.

    python benchmarks/time_profile.py                       # default config, 20 s of each run
    python benchmarks/time_profile.py --seconds 10 env.groups=1 --json /tmp/profile.json

Three measurements, one after another, with one BLAS thread as in pgpong.bench:
  1. the real trainer for `--seconds` (no tracking), timed without a profiler: agent steps/s, and
     this (main) thread's CPU per agent step from the first step to the last (set-up excluded);
  2. the same under cProfile: per agent step, the cumulative time of the functions that make up
     each part of a step (see PARTS); a part's time is wall time spent in this thread, which for
     preprocessing and learning is CPU, but for send/recv mostly waiting for the emulators;
  3. the emulators alone (random actions, the first group's vector env): CPU time of this
     thread inside send() and recv() per call, the frame copy out of the emulators included.
The emulators' own CPU per agent step is about cores / the ceiling of `python -m pgpong.bench`.
"""
import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pgpong import bench  # noqa: E402
from pgpong.engine.envs import seeded_envs  # noqa: E402
from pgpong.errors import PgpongError, entry_point  # noqa: E402

# part -> [(file name, function name, sign)]: cumulative times added (+1) or taken out (-1)
PARTS = {
    "frames to sparse inputs": [("preprocess.py", "frame_words", 1), ("preprocess.py", "diff_rows", 1),
                                ("preprocess.py", "binarize_batch", 1), ("preprocess.py", "batch_input", 1),
                                ("preprocess.py", "sparse_rows", 1)],
    "forward + sampling": [("policy.py", "hidden_batch", 1), ("policy.py", "probs", 1),
                           ("policy.py", "sample_batch", 1)],
    "recording steps, reading out episodes": [("rollout.py", "record_acts", 1), ("rollout.py", "record_step", 1),
                                              ("preprocess.py", "frame_words", -1), ("preprocess.py", "diff_rows", -1),
                                              ("preprocess.py", "binarize_batch", -1)],
    "episode gradients": [("trainer.py", "finish_episode", 1)],
    "optimizer update": [("trainer.py", "update", 1)],
    "tracking": [("trainer.py", "log_metrics", 1), ("tracking.py", "log_metrics", 1)],
    "send + recv (wall: mostly waiting)": [("envs.py", "send", 1), ("envs.py", "recv", 1)],
}


def parts_per_step(stats: pstats.Stats, steps: int) -> dict:
    """us per agent step of every part, from the profile's cumulative times."""
    cum = {}
    for (path, _, name), (_, _, _, ct, _) in stats.stats.items():
        key = (os.path.basename(path), name)
        cum[key] = cum.get(key, 0.0) + ct
    return {part: sum(sign * cum.get((f, fn), 0.0) for f, fn, sign in fns) / steps * 1e6
            for part, fns in PARTS.items()}


def send_recv_cpu(cfg, seconds: float) -> dict:
    """This thread's CPU per send() and recv() call of the first group, random actions, no learning."""
    rng, envs = seeded_envs(cfg)
    g = envs.groups[0]
    try:
        g.reset()
        calls, send_cpu, recv_cpu, t0 = 0, 0.0, 0.0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            actions = rng.integers(2, 4, size=g.num_envs)
            c0 = time.thread_time()
            g.send(actions)
            c1 = time.thread_time()
            g.recv()
            recv_cpu += time.thread_time() - c1
            send_cpu += c1 - c0
            calls += 1
    finally:
        envs.close()
    return {"envs_per_call": g.num_envs, "send_cpu_us_per_call": send_cpu / calls * 1e6,
            "recv_cpu_us_per_call": recv_cpu / calls * 1e6}


@entry_point
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of each run (default 20)")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. env.groups=1")
    args = ap.parse_args(argv)
    if not args.seconds > 0:
        raise PgpongError(f"--seconds={args.seconds}: must be > 0")
    cfg = bench.compose(args.overrides)
    with threadpool_limits(limits=1):
        plain = bench.timed_trainer(cfg, args.seconds)
        profiler = cProfile.Profile()
        profiler.enable()
        profiled = bench.timed_trainer(cfg, args.seconds)
        profiler.disable()
        io = send_recv_cpu(cfg, min(args.seconds, 5.0))
    result = {
        "overrides": args.overrides, "seconds": args.seconds,
        "steps_per_s": plain.steps / (plain.t1 - plain.t0),
        "main_thread_cpu_us_per_step": (plain.cpu1 - plain.cpu0) / plain.steps * 1e6,
        "profiled_steps": profiled.steps,
        "parts_us_per_step": parts_per_step(pstats.Stats(profiler), profiled.steps),
        "emulators_alone": io,
    }
    print(f"trainer ({' '.join(args.overrides) or 'defaults'}), {args.seconds:g} s: "
          f"{result['steps_per_s']:,.0f} agent steps/s; main-thread CPU "
          f"{result['main_thread_cpu_us_per_step']:.1f} us per agent step")
    print(f"under cProfile ({profiled.steps:,} agent steps), us per agent step:")
    for part, us in result["parts_us_per_step"].items():
        print(f"  {part:40s} {us:7.1f}")
    print(f"emulators alone, {io['envs_per_call']} envs per call: CPU of this thread "
          f"{io['send_cpu_us_per_call']:.0f} us per send(), {io['recv_cpu_us_per_call']:.0f} us per recv()")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
