"""`kill -9` at random moments of one training run, each followed by `resume=`; then check MLflow holds
every episode's metrics exactly once.

    python benchmarks/kill_resume.py                              # 20 kills, in a temp folder
    python benchmarks/kill_resume.py --kills 20 --episodes 4000 --seed 0 --dir /tmp/kr H=16

One `python -m pgpong.run` (2 emulators, short episodes, checkpoints every 20 episodes, metrics
flushed every 0.5 s, tracked in <dir>/mlflow.db) is killed with SIGKILL once its first checkpoint
exists plus a random delay; then `--kills - 1` times a `resume=<run id>` process is started and
killed after a random delay (some land in start-up, before the process has a checkpoint of its
own, some in training); a last `resume=` runs to the end. The check reads MLflow directly: one run,
FINISHED, episode/* (and time/steps_per_s) at every episode 1..N once,
train/update valued 1..U at episodes batch_size, 2*batch_size, ... once, the other train/* at the
same episodes, no `pgpong.data_loss` tag, no temp file left under outputs/. Prints a table per
process and one per metric; exits 1 if anything is off.
"""
import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CKPT_RE = re.compile(r"^ckpt-e(\d+)-s\d+\.npz$")
EPISODE_KEYS = ["episode/reward", "episode/running_reward", "episode/length", "time/steps_per_s"]
TRAIN_KEYS = ["train/grad_norm", "train/p_up_mean", "train/stale_step_fraction"]


def newest_checkpoint(cwd: Path) -> int:
    return max((int(m.group(1)) for p in cwd.glob("outputs/*/*/checkpoints/*") if (m := CKPT_RE.match(p.name))),
               default=0)


def child_env() -> dict:
    """This checkout's pgpong first on the path of every training process."""
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join(path)}


def start(args: list, cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "pgpong.run", *args], cwd=cwd, env=child_env(),
                                stdout=subprocess.DEVNULL, stderr=err)


def episodes_in_mlflow(client, run_id) -> int:
    return max((m.step for m in client.get_metric_history(run_id, "episode/reward")), default=0)


def table(header: list, rows: list) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).rjust(w) for x, w in zip(r, widths))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def check(client, run_id: str, episodes: int, batch_size: int) -> list:
    """Per metric: (key, expected, present, missing, doubled or unexpected)."""
    rows = []
    updates = list(range(batch_size, episodes + 1, batch_size))

    def row(key, got: Counter, want: Counter):
        rows.append((key, sum(want.values()), sum(got.values()), sum((want - got).values()),
                     sum((got - want).values())))

    for key in EPISODE_KEYS:
        row(key, Counter(m.step for m in client.get_metric_history(run_id, key)), Counter(range(1, episodes + 1)))
    h = client.get_metric_history(run_id, "train/update")
    row("train/update", Counter((m.step, int(m.value)) for m in h),
        Counter((e, i) for i, e in enumerate(updates, 1)))
    for key in TRAIN_KEYS:
        row(key, Counter(m.step for m in client.get_metric_history(run_id, key)), Counter(updates))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=4000)   # room for 20 kills on a quiet machine (1,500 ended after 10)
    parser.add_argument("--episode-steps", type=int, default=100, help="env.max_episode_steps")
    parser.add_argument("--seed", type=int, default=0, help="of the kill moments")
    parser.add_argument("--delay", type=float, nargs=2, default=(1.0, 12.0), metavar=("MIN_S", "MAX_S"),
                        help="a resumed process is killed this many seconds after it starts (uniform)")
    parser.add_argument("--dir", type=Path, help="work folder (default: a new temp folder)")
    parser.add_argument("overrides", nargs="*", help="more pgpong.run overrides, e.g. H=16")
    a = parser.parse_args(argv)
    cwd = a.dir or Path(tempfile.mkdtemp(prefix="pgpong-kill-resume-"))
    cwd.mkdir(parents=True, exist_ok=True)
    rng, batch_size = random.Random(a.seed), 3
    args = ["H=8", f"batch_size={batch_size}", "env.num_envs=2", f"env.max_episode_steps={a.episode_steps}",
            f"episodes={a.episodes}", "checkpoint_every=20", "tracking.flush_every_s=0.5", "log_every_s=5",
            *a.overrides]
    sys.path.insert(0, str(ROOT))
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{cwd}/mlflow.db")
    print(f"work folder {cwd}; pgpong.run {' '.join(args)}", flush=True)

    rows, run_id, t_all = [], None, time.monotonic()
    for k in range(a.kills):
        resumed_at = newest_checkpoint(cwd)
        proc = start([f"resume={run_id}"] if run_id else args, cwd, cwd / f"process{k}.log")
        t0 = time.monotonic()
        if run_id is None:     # the first kill comes after a checkpoint: before one, there is nothing to resume
            while not newest_checkpoint(cwd) and proc.poll() is None:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 2.0))
        else:
            time.sleep(rng.uniform(*a.delay))
        if proc.poll() is not None:
            print(f"process {k} ended by itself (exit {proc.returncode}) before its kill; see {cwd}/process{k}.log")
            break
        proc.kill()
        proc.wait()
        run_id = run_id or client.search_runs([e.experiment_id for e in client.search_experiments()])[0].info.run_id
        rows.append((k + 1, resumed_at, f"{time.monotonic() - t0:.1f}", newest_checkpoint(cwd),
                     episodes_in_mlflow(client, run_id)))
    kills = len(rows)
    t0 = time.monotonic()
    final = subprocess.run([sys.executable, "-m", "pgpong.run", f"resume={run_id}"], cwd=cwd, capture_output=True,
                           text=True, env=child_env())
    (cwd / "final.log").write_text(final.stderr)
    at = re.search(r"at episode (\d+)", final.stderr)
    print()
    print(table(["kill", "started at episode", "killed after s", "newest checkpoint", "episodes in MLflow"], rows))
    print(f"final resume: from episode {at.group(1) if at else '?'} to {a.episodes}, exit {final.returncode}, "
          f"{time.monotonic() - t0:.1f} s")

    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    run = client.get_run(run_id)
    metrics = check(client, run_id, a.episodes, batch_size)
    print()
    print(table(["metric", "expected", "present", "missing", "doubled or unexpected"], metrics))
    temps = sorted(str(p.relative_to(cwd)) for p in cwd.glob("outputs/**/*.tmp*"))
    problems = [
        *([f"{len(runs)} MLflow runs, expected 1"] if len(runs) != 1 else []),
        *([f"status {run.info.status}"] if run.info.status != "FINISHED" else []),
        *([f"pgpong.data_loss: {run.data.tags['pgpong.data_loss']}"] if "pgpong.data_loss" in run.data.tags else []),
        *[f"{m[0]}: {m[3]} missing, {m[4]} doubled" for m in metrics if m[3] or m[4]],
        *([f"temp files left: {', '.join(temps)}"] if temps else []),
    ]
    print()
    ahead = sum(r[4] > r[3] for r in rows)
    print(f"{kills} kills ({ahead} with MLflow ahead of the newest checkpoint), {a.episodes} episodes, "
          f"{time.monotonic() - t_all:.0f} s in all; run {run_id} {run.info.status}, resume_count "
          f"{run.data.tags.get('resume_count')} (processes that reopened the run before their kill, + the last)")
    print("PASS: every episode's metrics exactly once" if not problems else "FAIL: " + "; ".join(problems))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
