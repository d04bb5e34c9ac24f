"""Where a run's numbers go besides metrics.jsonl: TensorBoard and Weights & Biases (``--log-to``).

Every record the trainer writes to ``metrics.jsonl`` (or ``medmoe finetune`` to its history) goes to each
tracker as scalars named ``SPLIT/KEY`` (``train/total``, ``train/lr``, ``train/images_per_s``,
``train/data_wait``, ``train/route_load/2``, ``val/r1_i2t``, ``val/zeroshot_acc``, ...) at the record's step;
lists of numbers become one scalar per entry. At evaluation steps the trainer adds figures: word attention over
a held-out image (``eval.explain``) and each router's confusion matrix (``eval.report.plot_routing``).

TensorBoard writes event files to ``FOLDER/tensorboard`` (``tensorboard --logdir FOLDER``). Weights & Biases
writes its run to ``FOLDER/wandb``: offline, no account needed, unless ``WANDB_MODE=online`` or
``WANDB_API_KEY`` is set (``wandb sync FOLDER/wandb/offline-run-*`` uploads an offline run later); a resumed
training run continues the same W&B run. Both are optional extras; a missing one is a one-line error.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from ..errors import ConfigError, MissingExtraError

TRACKERS = ("tensorboard", "wandb")
EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # pip extra of each tracker


def parse_log_to(text: str | None) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` -> ("tensorboard", "wandb"); ConfigError for anything else."""
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in (text or "").split(",") if k.strip()))
    unknown = [k for k in kinds if k not in TRACKERS]
    if unknown:
        raise ConfigError(f"--log-to takes {' and/or '.join(TRACKERS)}, comma-separated (got {', '.join(unknown)})")
    return kinds


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics record, named ``SPLIT/KEY`` (``SPLIT`` its split or stage), lists entry by entry."""
    prefix = record.get("split") or record.get("stage") or "train"
    out = {}
    for key, value in record.items():
        if key in ("step", "split", "stage") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[f"{prefix}/{key}"] = float(value)
        elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            out.update({f"{prefix}/{key}/{i}": float(v) for i, v in enumerate(value)})
    return out


class Trackers:
    """The trackers of ``kinds`` for a run in ``folder``; ``log`` a metrics record, ``figures`` at a step, ``close``."""

    def __init__(self, kinds: tuple[str, ...], folder: str | Path, name: str, config: dict | None = None):
        self.kinds, folder = kinds, Path(folder)
        self.tensorboard = self.wandb = None
        if "tensorboard" in kinds:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise _missing("tensorboard") from None
            self.tensorboard = SummaryWriter(str(folder / "tensorboard"))
        if "wandb" in kinds:
            try:
                import wandb
            except ImportError:
                raise _missing("wandb") from None
            folder.mkdir(parents=True, exist_ok=True)
            id_file = folder / "wandb_id"  # the same W&B run when a training run resumes
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
            id_file.write_text(run_id + "\n")
            mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "medmoe"), name=name, id=run_id,
                                    resume="allow", dir=str(folder), config=config or {}, mode=mode)

    @property
    def active(self) -> bool:
        return bool(self.kinds)

    def log(self, record: dict) -> None:
        values, step = scalars(record), int(record["step"])
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(name, value, step)
        if self.wandb is not None and values:
            self.wandb.log(values, step=step)

    def figures(self, step: int, pngs: dict[str, Path]) -> None:
        """PNG figures (name -> file) at ``step``."""
        if self.tensorboard is not None:
            import numpy as np
            from PIL import Image

            for name, png in pngs.items():
                with Image.open(png) as image:
                    self.tensorboard.add_image(name, np.asarray(image.convert("RGB")), step, dataformats="HWC")
        if self.wandb is not None and pngs:
            import wandb

            self.wandb.log({name: wandb.Image(str(png)) for name, png in pngs.items()}, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


class TrackedHistory(list):
    """``medmoe finetune``'s per-epoch history, each entry also logged to the trackers at its position."""

    def __init__(self, trackers: Trackers):
        super().__init__()
        self.trackers = trackers

    def append(self, entry: dict) -> None:
        super().append(entry)
        self.trackers.log({"step": len(self), **entry})


def _missing(kind: str) -> MissingExtraError:
    return MissingExtraError(f"--log-to {kind} needs the {kind} package: pip install 'medmoe[{EXTRAS[kind]}]'")


def evaluation_figures(model, rows, routing: dict | None, folder: Path) -> dict[str, Path]:
    """The figures of an evaluation step: word attention over the first held-out row with a finding mask (else the
    first row), and each router's confusion matrix (``routing``: ``eval.routing.routing_scores``'s result)."""
    from ..eval.explain import explain
    from ..eval.report import plot_routing

    pngs = {}
    row = next((r for r in rows if r.mask is not None), rows[0] if rows else None)
    if row is not None:
        pngs["attention"] = explain(model, row.image, row.report, folder / "attention.png",
                                    title=f"{row.modality or ''} row {row.row}".strip(), mask=row.mask)[0]
    if routing and routing.get("num_experts"):
        figure = plot_routing({"held-out": {"routing": routing}}, folder / "routing.png")
        if figure is not None:
            pngs["routing"] = figure
    return pngs
