"""Train the Pong agent, tracked in MLflow.

    python -m pgpong.run                          # the gist's algorithm, 10000 episodes
    python -m pgpong.run lr=1e-3 H=200 seed=3     # overrides
    python -m pgpong.run episodes=50 tracking=none
    python -m pgpong.run -m lr=1e-4,1e-3 seed=0,1 # a grid (Hydra multirun)
"""
import sys
import traceback
from pathlib import Path

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf
from threadpoolctl import threadpool_limits

from pgpong import config, runinfo
from pgpong.callbacks import sweep_ids, threads_per_job, write_job_status
from pgpong.cli import precheck
from pgpong.envs import make_envs
from pgpong.errors import PgpongError
from pgpong.preprocess import input_size
from pgpong.tracking import make_tracker
from pgpong.trainer import train

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
config.register()


def run(cfg) -> dict:
    """One training run: validate, build collaborators, train, record the outcome."""
    hc = HydraConfig.get()
    launch_dir, out_dir = Path(hc.runtime.cwd), Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    parent_run_id, sweep_id = sweep_ids() if multirun else (None, None)
    name = runinfo.run_name(overrides, cfg)
    tags = {"seed": cfg.seed, "git_commit": runinfo.git_commit() or "unknown",
            "hydra_overrides": " ".join(overrides) or "(none)", "output_dir": str(out_dir)}
    if sweep_id:
        tags.update({"sweep_id": sweep_id, "hydra_job_num": hc.job.num})
    try:
        config.validate(cfg)
        if multirun:    # parallel jobs share the cores: fewer emulator threads each
            cfg.env.num_threads = threads_per_job(hc.launcher, cfg.env.num_threads)
        rng = np.random.default_rng(cfg.seed)     # the run's one random generator
        env_seeds = rng.integers(0, 2**31 - 1, size=cfg.env.num_envs).tolist()
        envs = make_envs(cfg.env, env_seeds)
    except PgpongError as e:
        if multirun:    # the sweep's run list shows the job that could not start, and why
            make_tracker(cfg.tracking, launch_dir, name, {**tags, "error": str(e)}, parent_run_id).end("FAILED")
        raise
    try:
        tracker = make_tracker(cfg.tracking, launch_dir, name, tags, parent_run_id)
        status = "FAILED"
        try:
            params = runinfo.flatten(cfg)
            params.update(envs.describe())
            params["D"] = input_size(cfg.crop, cfg.input.kind)
            tracker.log_params(params)
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            tracker.log_artifact(out_dir / "config.yaml")
            print(f"pgpong: run {name!r} -> {out_dir}" + (f" (MLflow run {tracker.run_id})" if tracker.run_id else ""),
                  file=sys.stderr)
            with threadpool_limits(limits=1):   # BLAS threads would fight the emulators for 2 cores
                summary = train(cfg, envs, tracker, rng, out_dir)
            tracker.log_metrics({"time/elapsed_s": summary["elapsed_s"],
                                 "time/tracking_write_s": getattr(tracker, "write_s", 0.0)}, step=summary["episodes"])
            tracker.log_artifact(summary["model_path"])
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            tracker.end(status)
    finally:
        envs.close()
    print(f"pgpong: {summary['episodes']} episodes, running reward {summary['running_reward']:+.2f}, "
          f"{summary['steps_per_s']:,.0f} steps/s; model {summary['model_path']}", file=sys.stderr)
    return summary


@hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
def main(cfg) -> float:
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        try:
            return run(cfg)["running_reward"]
        except PgpongError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    # In a multirun a failed job must not stop the others (sys.exit would end the whole sweep):
    # its MLflow run is already FAILED; leave a status for the sweep's end-of-run count.
    out_dir = Path(hc.runtime.output_dir)
    try:
        result = run(cfg)["running_reward"]
    except Exception as e:
        if not isinstance(e, PgpongError):
            traceback.print_exc()
        print(f"error: job {hc.job.num} ({' '.join(hc.overrides.task)}): {e}", file=sys.stderr)
        write_job_status(out_dir, "FAILED", f"{type(e).__name__}: {e}")
        return None
    write_job_status(out_dir, "FINISHED")
    return result


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
