"""The emulators, the rollout, the training loop and its checkpoint files."""
