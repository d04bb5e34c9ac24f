"""Manifests: JSONL or CSV tables of image-report pairs (paths relative to the manifest).

Columns: ``image``, ``report`` (required); ``modality``, ``split``, ``labels``, ``mask``, ``boxes``,
``box_size``, ``phrase``, ``dataset`` (optional; ``boxes``: the finding's boxes, [[x, y, width, height], ...] in
pixels of the image or of ``box_size`` = [width, height] when the boxes were drawn on another size of it
(MS-CXR); ``phrase``: the words of the report that grounding maps, default its finding, the first label;
``dataset`` names the benchmark a row belongs to, ``medmoe.data.benchmarks``). Files are read by
``medmoe.data.tables`` (BOM, CRLF and .gz accepted). Bad rows never stop a run: each is skipped with its row
number and reason; a CSV header without ``image`` or ``report`` is a one-line error.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ImageLoadError, ManifestError
from .io import is_dicom, load_image
from .modality import normalise_modality
from .tables import read_table

REQUIRED = ("image", "report")  # a CSV manifest's header must name them


@dataclass
class Row:
    row: int  # 1-based data row number in the manifest
    image: Path
    report: str
    modality: str | None = None
    split: str | None = None
    labels: list = field(default_factory=list)
    mask: Path | None = None
    dataset: str | None = None
    boxes: list | None = None  # [[x, y, width, height], ...] in pixels of the image (or of box_size)
    box_size: list | None = None  # [width, height] the boxes were drawn on (None: the image's own)
    phrase: str | None = None  # what grounding maps (None: the finding, labels[0])

    @property
    def group(self) -> str | None:
        """What evaluation keys the row's classes by: its dataset when it has one (classes of different
        datasets are never pooled, e.g. two ultrasound benchmarks), else its modality (MedSynth)."""
        return self.dataset or self.modality


@dataclass
class Manifest:
    path: Path
    rows: list[Row]  # usable rows
    unusable: list[dict]  # {"row": n, "reason": "..."}

    @property
    def total(self) -> int:
        return len(self.rows) + len(self.unusable)

    def split(self, name: str) -> list[Row]:
        """Rows of split ``name``; without split labels, every row is in ``train``."""
        if not any(r.split for r in self.rows):
            return list(self.rows) if name == "train" else []
        return [r for r in self.rows if r.split == name]

    def per_modality(self) -> dict[str, int]:
        return dict(sorted(Counter(r.modality or "unknown" for r in self.rows).items()))

    def summary(self) -> dict:
        return {"rows": self.total, "usable": len(self.rows), "per_modality": self.per_modality(),
                "unusable": self.unusable}


def _labels(value) -> list:
    if isinstance(value, list):
        return value
    if not value:
        return []
    text = str(value).strip()
    if text.startswith("["):
        return json.loads(text)
    return [v.strip() for v in text.split(";") if v.strip()]


def _numbers(value, name: str, shape: tuple[int, ...]) -> list | None:
    """A JSON list (or its text, from a CSV cell) of numbers: ``shape`` (2,) for a size, (-1, 4) for boxes."""
    if value is None or value == "" or value == []:
        return None
    try:
        value = json.loads(value) if isinstance(value, str) else value
        array = np.asarray(value, dtype=float).reshape(shape)
    except (ValueError, TypeError):
        raise ValueError(f"bad '{name}': {value!r}") from None
    if not np.isfinite(array).all() or (array[..., -2:] <= 0).any():
        raise ValueError(f"bad '{name}': {value!r} (sizes must be positive numbers)")
    return array.tolist()


def _dicom_modality(path: Path) -> str | None:
    import pydicom

    return normalise_modality(getattr(pydicom.dcmread(path, stop_before_pixels=True), "Modality", None))


def _parse(rec: dict, n: int, root: Path, decode: bool) -> Row:
    """A usable Row, or ValueError with the reason."""
    image = str(rec.get("image") or "").strip()
    if not image:
        raise ValueError("missing 'image'")
    report = str(rec.get("report") or "").strip()
    if not any(ch.isalnum() for ch in report):
        raise ValueError("empty report")
    path = (root / image).resolve()
    if not path.is_file():
        raise ValueError(f"image file not found: {image}")
    raw_modality = rec.get("modality")
    modality = normalise_modality(raw_modality)
    if raw_modality and modality is None:
        raise ValueError(f"unknown modality {raw_modality!r}")
    if modality is None and is_dicom(path):
        modality = _dicom_modality(path)
    if decode:
        load_image(path)
    mask = rec.get("mask")
    return Row(n, path, report, modality, (str(rec.get("split") or "").strip() or None), _labels(rec.get("labels")),
               (root / mask).resolve() if mask else None, str(rec.get("dataset") or "").strip() or None,
               _numbers(rec.get("boxes"), "boxes", (-1, 4)), _numbers(rec.get("box_size"), "box_size", (2,)),
               str(rec.get("phrase") or "").strip() or None)


def read_manifest(path: str | Path, decode: bool = False) -> Manifest:
    """Read every row; ``decode=True`` also decodes each image (what ``medmoe data check`` does)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    rows, unusable = [], []
    for rec in read_table(path, REQUIRED)[1]:
        try:
            if rec.error:
                raise ValueError(rec.error)
            rows.append(_parse(rec.data, rec.row, path.parent, decode))
        except ImageLoadError as exc:
            unusable.append({"row": rec.row, "reason": str(exc).split(": ", 1)[-1]})
        except (ValueError, OSError) as exc:
            unusable.append({"row": rec.row, "reason": str(exc)})
    return Manifest(path, rows, unusable)
