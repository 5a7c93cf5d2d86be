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
