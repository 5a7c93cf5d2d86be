"""Where a whole run's wall time goes: start-up, the training loop, and the end.

    python benchmarks/run_phases.py episodes=400            # any `python -m pgpong.run` overrides
    python benchmarks/run_phases.py episodes=400 tracking=none --json /tmp/phases.json

Runs `python -m pgpong.run <overrides>` in this process, from the folder it is launched in, and
times it from this script's first line (the interpreter's own start, ~20 ms, is not counted) to
where the run returns (its exit, as `python -m pgpong.run` exits, follows):
  start-up   to the first action sent to the emulators (imports, config, making and resetting
             the emulators, the tracker's start, the fresh weights);
  loop       from there to the last frames received: agent steps/s of the training loop with
             tracking writes, checkpoints and progress lines included, the figure to hold against
             the trainer row of `python -m pgpong.bench`;
  end        from there until the run returns (the end checkpoint, the model file, MLflow's audit and end).
The vector path only (env.vector=true): the times are taken at its groups' send and recv.
"""
import argparse
import json
import sys
import time

T0 = time.perf_counter()

from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pgpong import run  # noqa: E402
from pgpong.engine import envs  # noqa: E402


class Phases:
    """Wraps VectorGroup.send/recv: the time of the first send, of the last recv, agent steps between."""

    def __init__(self):
        self.first_send = self.last_recv = None
        self.steps = 0
        send, recv = envs.VectorGroup.send, envs.VectorGroup.recv

        def timed_send(group, actions):
            if self.first_send is None:
                self.first_send = time.perf_counter()
            return send(group, actions)

        def timed_recv(group):
            out = recv(group)
            self.last_recv = time.perf_counter()
            self.steps += group.num_envs
            return out

        envs.VectorGroup.send, envs.VectorGroup.recv = timed_send, timed_recv

    def summary(self, end: float) -> dict:
        if self.first_send is None or self.last_recv is None:
            return {"total_s": end - T0, "steps": 0}
        loop = self.last_recv - self.first_send
        return {"start_up_s": self.first_send - T0, "loop_s": loop, "end_s": end - self.last_recv,
                "total_s": end - T0, "steps": self.steps, "loop_steps_per_s": self.steps / max(loop, 1e-9),
                "whole_steps_per_s": self.steps / max(end - T0, 1e-9)}


def format_summary(s: dict) -> str:
    if not s["steps"]:
        return f"run_phases: no agent step was taken ({s['total_s']:.2f} s in all)"
    return (f"run_phases: start-up {s['start_up_s']:.2f} s, loop {s['loop_s']:.2f} s "
            f"({s['steps']:,} agent steps, {s['loop_steps_per_s']:,.0f}/s), end {s['end_s']:.2f} s; "
            f"total {s['total_s']:.2f} s ({s['whole_steps_per_s']:,.0f} agent steps/s, "
            f"{s['whole_steps_per_s'] / s['loop_steps_per_s']:.3f} of the loop's rate)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="also write the figures here")
    args, overrides = parser.parse_known_args()
    phases = Phases()
    sys.argv = ["pgpong.run", *overrides]
    code = run.command()                   # then exit as `python -m pgpong.run` does
    summary = phases.summary(time.perf_counter())
    if summary["steps"] or code == 0:      # a refused override: pgpong's one line stays the only one
        print(format_summary(summary), file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": overrides, "exit_code": code, **summary}, indent=1))
    return code


if __name__ == "__main__":
    run.exit_now(main())
