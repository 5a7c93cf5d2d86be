"""Optuna searches over specs in sweeps/: the spec format and the study driver."""
