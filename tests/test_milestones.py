"""Time to a running reward, as kept in a run's own MLflow record (pgpong/tracking/milestones.py)."""
import numpy as np
from mlflow.tracking import MlflowClient

from pgpong.tracking import milestones
from pgpong.tracking.tracker import MlflowTracker


def test_crossings_are_the_first_episode_at_or_above_each_threshold():
    episodes = np.arange(1, 7)
    running = [-21, -12, -10, -11, 0.5, -1]     # -10 first met at episode 3 (equal counts), 0 at 5
    seconds = [10, 20, 30, 40, 50, 60]
    steps = np.cumsum([100, 200, 300, 400, 500, 600])
    crossed = milestones.crossings(episodes, running, seconds, steps)
    assert crossed == {-10.0: (3, 30.0, 600), 0.0: (5, 50.0, 1500), 10.0: None}
    assert milestones.as_line(crossed) == ("running reward -10 at episode 3 (0.5 min, 0.00M steps); "
                                           "+0 at episode 5 (0.8 min, 0.00M steps); +10 not reached")


def test_a_run_logs_its_time_to_each_threshold_from_what_mlflow_holds(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "t", "run", {})
    lengths = [1000, 1100, 1200, 1300]
    for episode, (running, length) in enumerate(zip([-15.0, -9.5, -3.0, 0.0], lengths), start=1):
        tracker.log_metrics({"episode/running_reward": running, "episode/length": length}, step=episode)
    crossed = tracker.time_to()
    tracker.end()
    assert [t for t, hit in crossed.items() if hit] == [-10.0, 0.0]
    run = MlflowClient(uri).get_run(tracker.run_id)
    m = run.data.metrics
    assert (m["time_to/-10/episodes"], m["time_to/-10/steps"]) == (2, 2100)
    assert (m["time_to/0/episodes"], m["time_to/0/steps"]) == (4, 4600)
    assert 0 <= m["time_to/-10/seconds"] <= m["time_to/0/seconds"] < 60
    assert "time_to/10/episodes" not in m
