"""Reports that compare runs across seeds: data, statistics, plots, verdicts."""
