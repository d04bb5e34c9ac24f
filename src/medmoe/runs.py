"""The layout of a training run folder, which the trainer writes and ``MedMoE.from_pretrained`` reads:

    RUN/checkpoints/step-000200/   one complete checkpoint (see ``train/checkpoint.py``); its model in model/,
                                   the step it was taken at in trainer.json
    RUN/checkpoints/latest         name of the newest complete checkpoint, replaced atomically
    RUN/data.json                  what the run trains on: its manifests (absolute paths) or shards, and the
                                   training samples per modality ("unknown" for rows without one)
    RUN/model_config.json          the model configuration the run started from (pretrained parts named as
                                   given), which with train_args.json's seed rebuilds its initial weights
"""
from __future__ import annotations

import json
from pathlib import Path

from .files import atomic_write_text

LATEST = "latest"
DATA_FILE = "data.json"
MODEL_CONFIG_FILE = "model_config.json"


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


def write_training_data(run: str | Path, record: dict) -> None:
    atomic_write_text(Path(run) / DATA_FILE, json.dumps(record, indent=2) + "\n")


def training_data(run: str | Path | None) -> dict | None:
    """``RUN/data.json`` (see the module docstring), or None for a run without one."""
    path = Path(run) / DATA_FILE if run is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def initial_state(run: str | Path | None) -> tuple[dict, int] | None:
    """(the model configuration ``run`` started from, its seed), or None for a run without them."""
    if run is None or not (Path(run) / MODEL_CONFIG_FILE).is_file() or not (Path(run) / "train_args.json").is_file():
        return None
    return (json.loads((Path(run) / MODEL_CONFIG_FILE).read_text()),
            json.loads((Path(run) / "train_args.json").read_text())["seed"])
