"""MS-CXR (Boecking et al., ECCV 2022): phrase grounding on MIMIC-CXR, as PhysioNet publishes it.

``MS_CXR_Local_Alignment_v1.1.0.csv`` (or v1.0.0; the newest is read) holds one row per box with
``dicom_id, category_name, label_text, path, x, y, w, h, image_width, image_height`` (v1.1.0 adds
``split``): the box ``x, y, w, h`` is in pixels of the ``image_width x image_height`` MIMIC-CXR-JPG image
``path`` (``files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg``). Rows are (image, phrase) pairs, the 1,162 of
v1.0.0: a phrase's boxes are merged into one row (``boxes``, ``box_size``), its ``report`` and ``phrase`` are
the phrase, its label the category. The images are looked up at ``path`` under the folder (or under a
``mimic-cxr-jpg/`` or ``mimic-cxr-jpg/2.0.0/`` inside it), else by ``<dicom_id>.jpg`` anywhere below it (a
copy laid out otherwise, or with downsized JPEGs: the boxes follow the image's actual size). Phrases whose
image is missing are counted and skipped with one warning. Every row is in the test split (MS-CXR is an
evaluation set; ``source_split`` keeps v1.1.0's column); patients come from the path.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ...errors import DataError
from ..tables import read_rows
from .common import Adapter

COLUMNS = ("dicom_id", "category_name", "label_text", "x", "y", "w", "h", "image_width", "image_height")
CSV = re.compile(r"^MS_CXR_Local_Alignment_v(\d+)\.(\d+)\.(\d+)\.csv$")
IMAGE_BASES = (".", "mimic-cxr-jpg", "mimic-cxr-jpg/2.0.0")
LAYOUT = ("MS_CXR_Local_Alignment_v1.1.0.csv (or v1.0.0: dicom_id,category_name,label_text,path,x,y,w,h,"
          "image_width,image_height) and the MIMIC-CXR-JPG images it names (files/pNN/pNNNNNNNN/sNNNNNNNN/"
          "<dicom_id>.jpg, beside it or under mimic-cxr-jpg/)")


def annotation_file(root: Path) -> Path:
    """The newest ``MS_CXR_Local_Alignment_v*.csv`` in ``root``."""
    found = sorted((tuple(map(int, m.groups())), p) for p in root.glob("*.csv") if (m := CSV.match(p.name)))
    if not found:
        raise DataError(f"ms-cxr: no MS_CXR_Local_Alignment_v*.csv in {root} (expected: {LAYOUT})")
    return found[-1][1]


def _jpeg_index(root: Path) -> dict[str, Path]:
    """Every JPEG below ``root`` by its name without extension (the dicom_id)."""
    index = {}
    for folder, _, files in os.walk(root, followlinks=True):
        for name in files:
            if name.lower().endswith((".jpg", ".jpeg")):
                index.setdefault(name.rsplit(".", 1)[0], Path(folder) / name)
    return index


def _number(record: dict, key: str, where: str) -> float:
    try:
        return float(record[key])
    except (TypeError, ValueError):
        raise DataError(f"ms-cxr: {where}: column {key!r} must be a number (got {record[key]!r})") from None


def read(root: Path, out_dir: Path, seed: int, list_file: Path | None):
    csv = annotation_file(root)
    records = read_rows(csv, "ms-cxr", COLUMNS)
    phrases: dict[tuple[str, str], dict] = {}
    for n, rec in enumerate(records, start=2):  # row 1 is the header
        where = f"{csv} row {n}"
        box = [_number(rec, k, where) for k in ("x", "y", "w", "h")]
        size = [_number(rec, k, where) for k in ("image_width", "image_height")]
        if box[2] <= 0 or box[3] <= 0 or min(size) <= 0:
            raise DataError(f"ms-cxr: {where}: box width/height and image size must be positive (got {box}, {size})")
        key = (rec["dicom_id"].strip(), rec["label_text"].strip())
        row = phrases.setdefault(key, {
            "dicom_id": key[0], "path": (rec.get("path") or "").strip(), "labels": [rec["category_name"].strip()],
            "phrase": key[1], "boxes": [], "box_size": size, "source_split": (rec.get("split") or "").strip() or None})
        row["boxes"].append(box)
    index = None
    rows, missing = [], 0
    for row in phrases.values():
        image = next((root / base / row["path"] for base in IMAGE_BASES
                      if row["path"] and (root / base / row["path"]).is_file()), None)
        if image is None:
            index = _jpeg_index(root) if index is None else index
            image = index.get(row["dicom_id"])
        if image is None:
            missing += 1
            continue
        patient = re.search(r"/p(\d+)/s\d+/", image.as_posix())
        rows.append({"image": image, "labels": row["labels"], "split": "test",
                     "patient": f"p{patient.group(1)}" if patient else row["dicom_id"], "report": row["phrase"],
                     "phrase": row["phrase"], "boxes": row["boxes"], "box_size": row["box_size"],
                     **({"source_split": row["source_split"]} if row["source_split"] else {})})
    warnings = [f"ms-cxr: {missing} of {len(phrases)} phrases skipped: their image is not under {root}"] if missing else []
    return rows, warnings


ADAPTER = Adapter("ms-cxr", "xray", None, LAYOUT, read, prompts=None)
