"""Hydra multirun: one MLflow parent run per sweep, every job nested, failures counted, joblib works."""
import pytest
from mlflow.tracking import MlflowClient

from pgpong.tracking import multirun
from tests.conftest import TINY, compose_cfg, run_cli
from tests.servers import free_port


def runs_of(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("pgpong").experiment_id
    [parent] = client.search_runs([exp], "tags.pgpong_kind = 'multirun'")
    jobs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, jobs


def test_a_failed_job_is_failed_in_mlflow_while_the_other_jobs_run(tmp_path):
    # a missing checkpoint passes the config checks and fails only when the job starts
    r = run_cli(["-m", "resume=missing.npz,null", "seed=0,1", *TINY], cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "4 jobs, 2 failed" in r.stderr and "error: job 0 (resume=missing.npz seed=0" in r.stderr
    parent, jobs = runs_of(tmp_path)
    assert parent.info.status == "FAILED"
    assert parent.data.params["sweep_overrides"].startswith("resume=missing.npz,null seed=0,1")
    assert parent.data.tags["jobs"] == "4" and parent.data.tags["jobs_failed"] == "2"
    status = sorted((j.data.tags["hydra_overrides"].split()[0], j.info.status) for j in jobs)
    assert status == [("resume=missing.npz", "FAILED"), ("resume=missing.npz", "FAILED"),
                      ("resume=null", "FINISHED"), ("resume=null", "FINISHED")]
    assert {j.data.tags["sweep_id"] for j in jobs} == {parent.data.tags["sweep_id"]}
    assert all("missing.npz: no such model/checkpoint file" in j.data.tags["failure_reason"]
               for j in jobs if j.info.status == "FAILED")


@pytest.mark.slow
def test_joblib_jobs_run_in_parallel_processes_with_fewer_emulator_threads(tmp_path):
    r = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", "env.num_threads=2", *TINY],
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    parent, jobs = runs_of(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.params["launcher"] == "JoblibLauncher"
    assert sorted(j.data.params["seed"] for j in jobs) == ["0", "1"]
    assert all(j.info.status == "FINISHED" and j.data.params["env.num_threads"] == "1" for j in jobs)
    assert {j.data.tags["sweep_id"] for j in jobs} == {parent.data.tags["sweep_id"]}


def test_unreachable_tracking_server_stops_the_multirun_before_any_job(tmp_path):
    r = run_cli(["-m", f"tracking.uri=http://127.0.0.1:{free_port()}", "seed=0,1", *TINY], cwd=tmp_path)
    assert r.returncode == 2
    assert [l for l in r.stderr.splitlines() if l.startswith("error: ")][0].startswith("error: tracking.uri=http://")
    assert not list(tmp_path.glob("multirun/*/*/0"))


@pytest.mark.parametrize("overrides,cores,n_jobs,expected", [
    ([], 8, 2, 2),                        # default (0): each job's 4 cores shared by its 2 groups
    ([], 2, 2, 1),
    ([], 16, -1, 1),                      # n_jobs -1: a job per core
    (["env.num_threads=3"], 8, 2, 3),     # a number given is capped at the job's share
    (["env.num_threads=3"], 4, 2, 2),
])
def test_parallel_joblib_jobs_share_the_cores(monkeypatch, overrides, cores, n_jobs, expected):
    monkeypatch.setattr(multirun.os, "cpu_count", lambda: cores)
    launcher = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": n_jobs}
    env = compose_cfg(overrides).env
    assert multirun.threads_per_job(launcher, env) == expected
    assert multirun.threads_per_job({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"},
                                    env) == env.num_threads      # one job at a time: the run's own setting
