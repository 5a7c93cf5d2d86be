"""The scripts in benchmarks/ run for real on a tiny budget, so they cannot rot unnoticed."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_memory_benchmark_runs_the_real_trainer_and_writes_its_peak(tmp_path):
    out = tmp_path / "memory.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--envs", "4", "--steps", "250",
                        "--json", str(out), "H=16"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    # 4 envs in the default 2 groups, every episode exactly 250 steps: 4 episodes, 1,000 agent steps
    assert (result["envs"], result["groups"], result["episodes"], result["agent_steps"]) == (4, 2, 4, 1000)
    assert 0 < result["rss_before_training_mb"] <= result["peak_rss_mb"] < result["limit_mb"]
    assert "peak RSS" in r.stdout


def test_time_profile_splits_a_real_trainer_run_into_its_parts(tmp_path):
    out = tmp_path / "profile.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_profile.py"), "--seconds", "1",
                        "--json", str(out), "env.num_envs=2", "H=16"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["steps_per_s"] > 0 and result["main_thread_cpu_us_per_step"] > 0 and result["profiled_steps"] > 0
    parts = result["parts_us_per_step"]
    for part in ("frames to sparse inputs", "forward + sampling", "send + recv (wall: mostly waiting)"):
        assert parts[part] > 0, part
    assert result["emulators_alone"]["envs_per_call"] == 1          # 2 envs in the default 2 groups
    assert result["emulators_alone"]["recv_cpu_us_per_call"] > 0
    assert "us per agent step" in r.stdout


def test_time_profile_refuses_a_bad_override(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_profile.py"), "env.groups=3"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: env.groups=3") and "Traceback" not in r.stderr


def test_run_phases_times_a_real_run_from_launch_to_exit(tmp_path):
    out = tmp_path / "phases.json"
    # 2 envs in one group, every episode cut at 100 steps: 4 episodes end after 200 steps of each env
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_phases.py"), "--json", str(out), "episodes=4",
                        "env.num_envs=2", "env.groups=1", "env.max_episode_steps=100", "H=16"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(out.read_text())
    assert s["steps"] == 400 and s["exit_code"] == 0
    assert s["start_up_s"] > 0 and s["loop_s"] > 0 and s["end_s"] > 0
    assert abs(s["start_up_s"] + s["loop_s"] + s["end_s"] - s["total_s"]) < 1e-6
    assert s["whole_steps_per_s"] < s["loop_steps_per_s"]
    assert "run_phases: start-up" in r.stderr.splitlines()[-1]
    assert (tmp_path / "mlflow.db").is_file()                  # the run as a user runs it: tracked


def test_run_phases_leaves_a_refused_override_to_pgpongs_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_phases.py"), "env.groups=3"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: env.groups=3") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
