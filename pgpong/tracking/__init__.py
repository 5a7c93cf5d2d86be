"""Where runs are recorded: the MLflow tracker, the multirun parent run, run names and params."""
