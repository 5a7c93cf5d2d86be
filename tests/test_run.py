"""The real entry point `python -m pgpong.run`: a tracked smoke run read back from MLflow, and
every kind of bad input stopping with one line, exit 2, and nothing left behind."""
import pytest
from mlflow.tracking import MlflowClient

from pgpong.engine import checkpoint
from tests.conftest import TINY, assert_learned, compose_cfg


def runs_in(db):
    client = MlflowClient(f"sqlite:///{db}")
    exps = client.search_experiments()
    return client, client.search_runs([e.experiment_id for e in exps]) if exps else []


def test_smoke_run_is_tracked_in_mlflow(tmp_path, cli):
    proc = cli(TINY + ["lr=1e-3", "seed=3", "episodes=3", "batch_size=2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    db = tmp_path / "mlflow.db"                    # resolved against the launch directory
    assert db.is_file()
    client, runs = runs_in(db)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("H=8,batch_size=2,") and "lr=0.001" in run.info.run_name
    assert run.info.run_name.endswith("seed=3")
    p = run.data.params
    assert p["lr"] == "0.001" and p["H"] == "8" and p["seed"] == "3" and p["gamma"] == "0.99"
    assert p["crop.bottom"] == "195" and p["env.id"] == "ALE/Pong-v5" and p["D"] == "6400"
    assert p["env.resolved.frameskip"] == "4" and p["env.resolved.repeat_action_probability"] == "0.25"
    assert run.data.tags["seed"] == "3" and "lr=1e-3" in run.data.tags["hydra_overrides"]
    assert run.data.tags["git_commit"] != "unknown"
    hist = client.get_metric_history(run.info.run_id, "episode/reward")
    assert [m.step for m in hist] == [1, 2, 3]
    running = client.get_metric_history(run.info.run_id, "episode/running_reward")
    assert running[0].value == hist[0].value
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/grad_norm")] == [2]
    assert "train/p_up_mean" in run.data.metrics and "time/steps_per_s" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "model.npz"}
    model = client.download_artifacts(run.info.run_id, "model.npz", str(tmp_path / "dl"))
    arrays, meta = checkpoint.load(model)
    assert arrays["W1"].shape == (6400, 8) and meta["config"]["lr"] == 0.001
    assert_learned(arrays, compose_cfg(TINY + ["lr=1e-3", "seed=3", "episodes=3", "batch_size=2"]))
    assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id, "train/grad_norm"))


def test_stop_at_ends_the_run_at_the_first_episode_whose_running_reward_passes_it(tmp_path, cli):
    base = TINY + ["episodes=10", "seed=2", "checkpoint_every=100"]
    (tmp_path / "full").mkdir()
    full = cli(base, cwd=tmp_path / "full")
    assert full.returncode == 0, full.stderr
    client, [run] = runs_in(tmp_path / "full" / "mlflow.db")
    running = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "episode/running_reward"),
                                       key=lambda m: m.step)]
    # the threshold: just under the first new high after episode 1, so the run must stop exactly there
    last = next(i for i in range(1, len(running)) if running[i] > max(running[:i]))
    threshold = (max(running[:last]) + running[last]) / 2
    (tmp_path / "stop").mkdir()
    stopped = cli(base + [f"stop_at={threshold!r}"], cwd=tmp_path / "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"pgpong: {last + 1} episodes," in stopped.stderr
    client, [run] = runs_in(tmp_path / "stop" / "mlflow.db")
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "episode/running_reward"))
    assert steps == list(range(1, last + 2))


def test_a_new_run_trains_while_mlflow_starts_and_its_record_reads_as_if_mlflow_was_there_first(tmp_path, cli):
    proc = cli(TINY + ["episodes=6", "checkpoint_every=3"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    client, [run] = runs_in(tmp_path / "mlflow.db")
    assert f"pgpong: MLflow run {run.info.run_id}" in proc.stderr
    rewards = sorted(client.get_metric_history(run.info.run_id, "episode/reward"), key=lambda m: m.step)
    assert [m.step for m in rewards] == [1, 2, 3, 4, 5, 6]
    # stamped when played, not when sent: after the run's start, in the order played
    stamps = [m.timestamp for m in rewards]
    assert run.info.start_time <= stamps[0] and stamps == sorted(stamps)
    assert run.data.metrics["time_to/-10/seconds"] >= 0
    for ckpt in sorted((tmp_path / "outputs").glob("*/*/checkpoints/*.npz")):
        assert checkpoint.load(ckpt)[1]["mlflow_run_id"] == run.info.run_id


def test_while_mlflow_loads_the_training_thread_gets_the_gil_back_sooner():
    import sys
    import threading

    from pgpong.tracking.tracker import DeferredTracker, NullTracker
    before, release, seen = sys.getswitchinterval(), threading.Event(), []

    def make():                     # stands in for importing MLflow and creating the run
        seen.append(sys.getswitchinterval())
        release.wait(10)
        return NullTracker()
    tracker = DeferredTracker(make)
    target = pytest.approx(DeferredTracker.SWITCH_INTERVAL_S)       # Python keeps it in whole microseconds
    assert sys.getswitchinterval() == target and DeferredTracker.SWITCH_INTERVAL_S < before
    release.set()
    tracker.flush()                 # waits for it
    assert seen == [target] and sys.getswitchinterval() == before


def test_tracking_none_writes_no_database(tmp_path, cli):
    proc = cli(TINY + ["tracking=none"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert list(tmp_path.glob("outputs/*/*/model.npz"))


@pytest.mark.parametrize("override,expected", [
    ("H=-5", "H=-5: must be a positive integer"),
    ("lr=abc", "lr=abc: must be a number"),
    ("episodes=0", "episodes=0: must be a positive integer"),
    ("foo=1", "foo: unknown key; allowed at the top level: H, lr,"),
    ("crop.foo=3", "crop.foo: unknown key; allowed in 'crop': top, bottom, left, right, stride"),
    ("env=bogus", "env=bogus: no such option; choose one of pong_v0, pong_v5"),
    ("crop.top=200", "crop.top=200, crop.bottom=195: need 0 <= top < bottom <= 210"),
    ("crop.stride=0", "crop.stride=0: must be >= 1"),
    ("gamma=1.5", "gamma=1.5: must be in (0, 1]"),
    ("seed=0,-1", "seed=-1: must be >= 0"),
    ("optim.beta1=0.5", "optim.beta1: unknown key; allowed in 'optim': name, eps"),
    ("baseline.lr=0.1", "baseline.lr: unknown key; allowed in 'baseline': kind"),
    ("env.frameskip=x", "env.frameskip=x: must be an integer or null"),
    ("stop_at=21", "stop_at=21.0: must be a running reward in (-21, 21) or null"),
])
def test_bad_input_is_one_plain_line_and_nothing_is_left(tmp_path, cli, override, expected):
    args = ["-m", override] if "," in override else [override]
    proc = cli(args, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {lines[0][len('error: '):]}"] and lines[0].startswith(f"error: {expected}")
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_unknown_env_id_fails_before_a_run_is_recorded(tmp_path, cli):
    proc = cli(TINY + ["env.id=ALE/NoSuchGame-v5"], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "env.id=ALE/NoSuchGame-v5: not an ALE game" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_tracking_server_fails_before_training(tmp_path, cli):
    proc = cli(TINY + ["tracking.uri=http://127.0.0.1:9"], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "tracking.uri=http://127.0.0.1:9: the MLflow tracking server does not answer" in proc.stderr
    assert not list(tmp_path.glob("outputs/*/*/model.npz"))
