"""Train the Pong agent, tracked in MLflow.

    python -m pgpong.run                          # the gist's algorithm, 10000 episodes
    python -m pgpong.run lr=1e-3 H=200 seed=3     # overrides
    python -m pgpong.run episodes=50 tracking=none
    python -m pgpong.run -m lr=1e-4,1e-3 seed=0,1 # a grid (Hydra multirun)
    python -m pgpong.run resume=<MLflow run id | ckpt.npz | checkpoints folder> [episodes=20000]
"""
import time

LAUNCHED_MS = int(time.time() * 1000)   # a single run's MLflow start time: its seconds count from the command's start

if __name__ == "__main__":     # before the slow imports below: a signal while they load is one line too
    from pgpong import interrupt
    interrupt.guard()

import atexit
import contextlib
import os
import re
import signal
import sys
import threading
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import OmegaConf

from pgpong import cluster, config, interrupt
from pgpong.cli import precheck
from pgpong.engine import checkpoint
from pgpong.engine.state import SHAPE_KEYS
from pgpong.errors import Interrupted, PgpongError, entry_point, fault, say_error
from pgpong.files import remove_temps
from pgpong.launch import newest_valid_checkpoint, read_checkpoint, start, train_run
from pgpong.paths import CONF_DIR, resolve_path, resolve_sqlite_uri
from pgpong.tracking import milestones, naming, store
from pgpong.tracking.multirun import sweep_ids, threads_per_job, write_job_status
from pgpong.tracking.tracker import make_tracker

config.register()


class StopFlag:
    """SIGINT/SIGTERM handler of a training run: the first asks for a checkpoint and a clean stop, a
    second quits at once. Until the training loop first asks (start-up: envs, MLflow), there is
    nothing to save: a signal stops at once (interrupt.Stop, a KeyboardInterrupt)."""

    def __init__(self):
        self.reason = None
        self.asked = False
        self._old = {}

    def __call__(self):
        self.asked = True
        return self.reason

    def handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if not self.asked:
            raise interrupt.Stop(signum)
        if self.reason is None:
            self.reason = name
            print(f"pgpong: {name}: finishing the current step and writing a checkpoint "
                  f"(Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
        else:   # files are written to a temp name and renamed, so the last good checkpoint stays whole
            print(f"pgpong: {name} again: quitting at once; the last complete checkpoint is kept",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def load_checkpoint(resume: str, launch_dir: Path, tracking_cfg) -> tuple[dict, dict, Path]:
    """(arrays, meta, path) for resume=: the file given, or the newest valid checkpoint of a folder
    (given, or an MLflow run's); each newer one that is corrupt is skipped with one line saying why."""
    where = find_checkpoint(resume, launch_dir, tracking_cfg)
    if not where.is_dir():
        return (*read_checkpoint(where), where)
    return newest_valid_checkpoint(where, lambda s: print(f"pgpong: {s}", file=sys.stderr, flush=True))


def find_checkpoint(resume: str, launch_dir: Path, tracking_cfg) -> Path:
    """resume= as a checkpoint file, a folder of checkpoints, or an MLflow run id (its checkpoint folder)."""
    p = resolve_path(resume, launch_dir)
    if p.is_dir():
        return p / "checkpoints" if (p / "checkpoints").is_dir() else p
    if p.exists() or p.suffix == ".npz":
        return p
    if re.fullmatch(r"[0-9a-f]{32}", resume) and tracking_cfg.backend == "mlflow":
        from mlflow.exceptions import MlflowException
        uri = resolve_sqlite_uri(tracking_cfg.uri, launch_dir, "tracking.uri")
        try:
            run = store.open_client(uri, must_exist=True, writes=False).get_run(resume)
        except MlflowException:
            raise PgpongError(f"resume={resume}: no such MLflow run in {uri}") from None
        folder = run.data.tags.get("checkpoint_dir")
        if not folder:
            raise PgpongError(f"resume={resume}: MLflow run has no checkpoint_dir tag (started before checkpoints)")
        started_from = run.data.tags.get("resumed_from_checkpoint")
        if not checkpoint.list_checkpoints(folder) and started_from and Path(started_from).is_file():
            remove_stale_temps(Path(folder))   # its last process was stopped before (or while) writing one
            return Path(started_from)
        return Path(folder)
    raise PgpongError(f"resume={resume}: neither a checkpoint file, a folder of checkpoints, nor an MLflow run id")


def remove_stale_temps(ckpt_folder: Path) -> None:
    """Delete the temp files a kill during an atomic write left in a stopped run's checkpoints/ and output folder.

    A resumed run writes into a new folder, so nothing else would ever delete them.
    """
    if ckpt_folder.name == "checkpoints":
        for p in [*remove_temps(ckpt_folder), *remove_temps(ckpt_folder.parent)]:
            print(f"pgpong: removed {p} (left by an interrupted write)", file=sys.stderr)


def stopped_out_dir(ckpt: Path) -> Path:
    """The output folder of the run that wrote checkpoint `ckpt` (its stale temp files removed)."""
    remove_stale_temps(ckpt.parent)
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def override_keys(overrides: list[str]) -> list[str]:
    """Dotted keys (or whole groups) the user set on the command line, except resume and hydra."""
    keys = []
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0].replace("/", ".")
        if key != "resume" and not key.startswith("hydra"):
            keys.append(key)
    return keys


def resume_config(cfg, overrides: list[str], saved: dict, path):
    """The checkpoint's config, with only what the user overrode now taken from the command line."""
    explicit = override_keys(overrides)

    def chosen_now(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in explicit)

    merged = cfg.copy()
    whole = []            # option groups (optim=adam, baseline=value) the checkpoint chose otherwise
    for group, schemas in config.OPTION_SCHEMAS.items():
        kind = (saved.get(group) or {}).get(config.OPTION_KEY[group])
        if group in explicit or kind not in schemas or kind == merged[group][config.OPTION_KEY[group]]:
            continue
        node = OmegaConf.merge(OmegaConf.structured(schemas[kind]), saved[group])   # that option's own keys
        for key in explicit:                   # e.g. optim.eps=... set now: on top of the saved option
            if key.startswith(group + "."):
                OmegaConf.update(node, key[len(group) + 1:], OmegaConf.select(cfg, key), merge=False)
        merged[group] = node
        whole.append(group)
    for key, value in naming.flatten(OmegaConf.create(saved)).items():
        if key == "resume" or chosen_now(key) or key.split(".")[0] in whole:
            continue
        OmegaConf.update(merged, key, value, merge=False)    # every key known: checked by read_checkpoint
    for key in SHAPE_KEYS:
        now = OmegaConf.to_container(OmegaConf.select(merged, key)) if OmegaConf.is_config(
            OmegaConf.select(merged, key)) else OmegaConf.select(merged, key)
        before = saved
        for part in key.split("."):
            before = before.get(part) if isinstance(before, dict) else None
        if isinstance(now, dict) and isinstance(before, dict):     # speed-only keys may differ, or be new
            free = [k[len(key) + 1:] for k in naming.SPEED_ONLY if k.startswith(key + ".")]
            now, before = ({k: v for k, v in d.items() if k not in free} for d in (now, before))
        if now != before:
            raise PgpongError(f"resume: {key}={now} but {path} was trained with {key}={before}; "
                              f"{key} cannot change when resuming (drop that override)")
    return merged


def run(cfg) -> dict:
    """One training run: validate, build collaborators, train, record the outcome."""
    hc = HydraConfig.get()
    launch_dir, out_dir = Path(hc.runtime.cwd), Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    parent_run_id, sweep_id = sweep_ids() if multirun else (None, None)
    sweep_tags = {"sweep_id": sweep_id, "hydra_job_num": hc.job.num} if sweep_id else {}
    if cluster.scheduler_job():
        sweep_tags["scheduler_job"] = cluster.scheduler_job()
    with StopFlag() as stop, contextlib.ExitStack() as stack:
        ckpt = saved = None
        try:
            if multirun and not cfg.resume and cluster.rerun_checkpoint(out_dir):   # a requeued/retried job
                cfg.resume = str(cluster.rerun_checkpoint(out_dir).parent)             # its newest valid one
            if cfg.resume:
                arrays, saved, path = load_checkpoint(cfg.resume, launch_dir, cfg.tracking)
                cfg = resume_config(cfg, overrides, saved["config"], path)
                ckpt = (arrays, saved, path)
            config.validate(cfg)
            if multirun:    # parallel jobs share the cores: fewer emulator threads each
                cfg.env.num_threads = cluster.job_threads(cfg.env) or threads_per_job(hc.launcher, cfg.env)
            begun = stack.enter_context(start(cfg, ckpt))
        except PgpongError as e:
            if multirun:    # the sweep's run list shows the job that could not start, and why
                tags = {"seed": cfg.seed, "hydra_overrides": " ".join(overrides) or "(none)",
                        "output_dir": str(out_dir), "failure_reason": str(e)[:5000], **sweep_tags}
                make_tracker(cfg.tracking, launch_dir, naming.run_name(overrides, cfg), tags,
                             parent_run_id).end("FAILED")
            raise
        name = (saved or {}).get("run_name") or naming.run_name(overrides, cfg)
        tags = {"seed": cfg.seed, "git_commit": naming.git_commit() or "unknown",
                "hydra_overrides": " ".join(overrides) or "(none)", "output_dir": str(out_dir),
                "checkpoint_dir": str(out_dir / "checkpoints")}
        if ckpt:
            tags["resumed_from_checkpoint"] = str(ckpt[2])
        else:     # a resumed run keeps the description it started with
            choices = OmegaConf.to_container(hc.runtime.choices)
            tags[naming.NOTE_TAG] = naming.description(cfg, choices, overrides)
        tags.update(sweep_tags)
        tracker = make_tracker(cfg.tracking, launch_dir, name, tags, parent_run_id, out_dir=out_dir,
                               resume_run_id=(saved or {}).get("mlflow_run_id"),
                               stopped_out_dir=stopped_out_dir(ckpt[2]) if ckpt else None, defer=True,
                               start_ms=None if multirun else LAUNCHED_MS)
        ckpt_meta = {"run_name": name}     # + the run id once MLflow has it (the trainer flushes before a checkpoint)

        def on_tracker(t) -> None:
            ckpt_meta["mlflow_run_id"] = t.run_id
            if t.run_id:
                print(f"pgpong: MLflow run {t.run_id} ({t.uri})", file=sys.stderr, flush=True)
        # the first episode and update this MLflow run should hold (a new run made from a checkpoint: after it)
        first = (begun.state.episode, begun.state.updates) if begun.state and not getattr(tracker, "resumed", False) \
            else (0, 0)
        status = "FAILED"
        try:
            print(f"pgpong: run {name!r} -> {out_dir}"
                  + (f", resumed from {ckpt[2]} at episode {begun.state.episode}" if ckpt else ""),
                  file=sys.stderr, flush=True)
            tracker.when_ready(on_tracker)
            summary = train_run(cfg, begun, tracker, out_dir, stop=stop, ckpt_meta=ckpt_meta)
            lost = tracker.audit(first[0], summary["episodes"], first[1], summary["updates"])
            if lost:
                tracker.set_tags({"pgpong.data_loss": lost[:5000]})
                print(f"pgpong: data loss: MLflow run {tracker.run_id} does not hold every metric once: {lost}",
                      file=sys.stderr, flush=True)
            log_milestones(tracker)
            status = "FINISHED"
        except Interrupted as e:
            status = "KILLED"
            e.run_id = tracker.run_id
            tracker.set_tags({"stopped_at_episode": e.episode, "stop_signal": e.signame,
                              "last_checkpoint": e.checkpoint})
            log_milestones(tracker)       # what a stopped run reached is a result too
            raise
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException as e:
            reason = str(e) if isinstance(e, PgpongError) else f"{type(e).__name__}: {e}"
            tracker.set_tags({"failure_reason": reason[:5000]})
            raise
        finally:
            tracker.end(status)
    print(f"pgpong: {summary['episodes']} episodes, running reward {summary['running_reward']:+.2f}, "
          f"{summary['steps_per_s']:,.0f} steps/s; model {summary['model_path']}", file=sys.stderr)
    return summary


def log_milestones(tracker) -> None:
    """Log the run's time to each running-reward threshold and print it as one line."""
    crossed = tracker.time_to()
    if crossed:
        print(f"pgpong: {milestones.as_line(crossed)}", file=sys.stderr, flush=True)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg) -> float:
    hc = HydraConfig.get()
    multirun, out_dir = hc.mode == RunMode.MULTIRUN, Path(hc.runtime.output_dir)
    try:
        result = run(cfg)["running_reward"]
    except Interrupted as e:    # a signal stops the whole sweep, as it stops a single run
        if multirun:
            write_job_status(out_dir, "KILLED", str(e))
        target = getattr(e, "run_id", None) or e.checkpoint
        print(f"pgpong: stopped by {e.signame} at episode {e.episode}; checkpoint {e.checkpoint}; "
              f"continue with: python -m pgpong.run resume={target}", file=sys.stderr)
        sys.exit(128 + getattr(signal.Signals, e.signame, signal.SIGINT).value)
    except interrupt.Stop as e:       # before training began: nothing to resume
        if multirun:
            write_job_status(out_dir, "KILLED", str(e))
        raise
    except Exception as e:
        line = str(e) if isinstance(e, PgpongError) else fault(e)   # a user's mistake, or the machine's
        if not multirun:
            if line is None:
                raise
            sys.exit(say_error(line))
        # In a multirun a failed job must not stop the others (sys.exit would end the whole sweep):
        # its MLflow run is already FAILED; leave a status for the sweep's end-of-run count.
        if line is None:
            traceback.print_exc()
        say_error(f"job {hc.job.num} ({' '.join(hc.overrides.task)}): {line or e}")
        write_job_status(out_dir, "FAILED", f"{type(e).__name__}: {e}")
        return None
    if multirun:
        write_job_status(out_dir, "FINISHED")
    return result


def hydra_line(e: HydraException) -> str:
    """Hydra's message in one line: what failed and the options it lists, without its search path."""
    text = str(e).split("Config search path:")[0].strip()
    first, _, rest = text.partition("\n")
    head, _, options = rest.strip().partition("\n")
    return first + (f"; {head.strip()} {', '.join(o.strip() for o in options.split())}" if head else "")


@entry_point
def command() -> int:
    """`python -m pgpong.run`: the command line checked, then the Hydra app. Hydra re-raises what
    fails around a run (e.g. creating an output folder nobody can write), so that too is one line."""
    precheck(sys.argv[1:])
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        main()
    except HydraException as e:     # e.g. hydra/launcher=nope, which precheck leaves to Hydra
        raise PgpongError(hydra_line(e)) from None
    return 0


def exit_now(code: int) -> None:
    """Exit once everything is written: exit handlers run, the interpreter's teardown (freeing
    MLflow's, SQLAlchemy's and pandas' modules, ~1 s after a run) is skipped. Only when no other
    thread is left: one still running (e.g. joblib's worker manager after a multirun) is shut down
    by the interpreter's own exit, in its own order."""
    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(command())
