"""The algorithm as pure functions of arrays: preprocessing, policy, gradient, returns, optimizers.

Imports nothing of pgpong outside this folder (tests/test_layers.py keeps it so)."""
