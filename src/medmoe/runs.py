"""The layout of a training run folder, which the trainer writes and ``MedMoE.from_pretrained`` reads:

    RUN/checkpoints/step-000200/   one complete checkpoint (see ``train/checkpoint.py``); its model in model/,
                                   the step it was taken at in trainer.json
    RUN/checkpoints/latest         name of the newest complete checkpoint, replaced atomically
"""
from __future__ import annotations

import json
from pathlib import Path

from .files import atomic_write_text

LATEST = "latest"


def checkpoints_dir(run: str | Path) -> Path:
    return Path(run) / "checkpoints"


def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest complete checkpoint folder of ``run``, or None if it has none."""
    pointer = checkpoints_dir(run) / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if path.is_dir() else None


def trained_steps(run: str | Path) -> int | None:
    """The steps ``run`` has trained: its newest complete checkpoint's step (None without one)."""
    path = latest_checkpoint(run)
    return json.loads((path / "trainer.json").read_text())["step"] if path else None


def set_latest(run: str | Path, name: str) -> None:
    """Point ``latest`` at the complete checkpoint ``checkpoints/name``."""
    atomic_write_text(checkpoints_dir(run) / LATEST, name)
