"""The trainer: loop, checkpoints (and, later, distributed helpers)."""
