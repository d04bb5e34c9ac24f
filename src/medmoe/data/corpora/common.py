"""What every corpus adapter shares: the rows it collects, the rows it skips, the split it draws
when the source has none, and the manifest it writes."""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import DataError
from ...files import atomic_write
from ...seeding import derive_seed
from ..modality import normalise_modality

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test"}
VAL_FRACTION = TEST_FRACTION = 0.05  # of the groups (reports, patients), where the source has no split


@dataclass
class Collection:
    """Rows found in a source (``image`` an absolute Path), the count of each reason a row was skipped,
    and one warning line for each part of the source that was left out."""
    dataset: str
    rows: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)

    def add(self, image: Path | None, report, split: str, modality=None, **extra) -> None:
        """Keep a row, or count it as skipped: no image file, or a report with no letter or digit."""
        report = " ".join(str(report or "").split())
        if image is None or not image.is_file():
            self.skipped["image file not found"] += 1
        elif not any(ch.isalnum() for ch in report):
            self.skipped["empty report"] += 1
        else:
            self.rows.append({"image": image, "report": report, "modality": normalise_modality(modality) or "",
                              "split": split, "dataset": self.dataset, **extra})


def layout_error(dataset: str, root: Path, missing: str, hint: str) -> DataError:
    return DataError(f"{dataset}: {missing} not found under {root} (expected {hint})")


def child(folder: Path, *names: str) -> Path | None:
    """The first entry of ``folder`` named one of ``names`` (case-insensitive), or None."""
    if not folder.is_dir():
        return None
    entries = {p.name.lower(): p for p in folder.iterdir()}
    return next((entries[n.lower()] for n in names if n.lower() in entries), None)


def seeded_split(group: str, seed: int) -> str:
    """train/val/test for a whole group (a patient, a report), drawn from (seed, group) alone: the
    same group always lands in the same split, whatever else the source holds."""
    u = derive_seed(seed, "split", group) / 2**63
    return "test" if u < TEST_FRACTION else "val" if u < TEST_FRACTION + VAL_FRACTION else "train"


def write_manifest(collection: Collection, out: str | Path) -> dict:
    """Write the rows as a JSONL manifest (image paths relative to its folder), atomically; return the summary."""
    out = Path(out)
    if out.suffix.lower() not in (".jsonl", ".json"):
        raise DataError(f"output manifest must end with .jsonl: {out}")
    if not collection.rows:
        raise DataError(f"{collection.dataset}: no usable row ({dict(collection.skipped) or 'the source is empty'})")
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for row in collection.rows:
                image = Path(os.path.relpath(row["image"].resolve(), base)).as_posix()
                f.write(json.dumps({**row, "image": image}, ensure_ascii=False) + "\n")

    atomic_write(out, write)
    return {"dataset": collection.dataset, "out": str(out), "rows": len(collection.rows),
            "per_split": dict(sorted(Counter(r["split"] for r in collection.rows).items())),
            "per_modality": dict(sorted(Counter(r["modality"] or "unknown" for r in collection.rows).items())),
            "skipped": dict(sorted(collection.skipped.items())), "warnings": list(collection.warnings)}
