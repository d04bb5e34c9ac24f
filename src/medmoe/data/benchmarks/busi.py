"""Breast ultrasound: BUSI (Al-Dhabyani et al. 2020), as UniMed-CLIP evaluates it (RadImageNet's task).

``Dataset_BUSI_with_GT/{benign,malignant,normal}/"<class> (N).png"`` with ``"<class> (N)_mask.png"``
and, for images with several lesions, ``_mask_1.png``, ``_mask_2.png``. Two classes, benign and
malignant: the normal folder counts as benign, as in RadImageNet's ``breast_*_fold*.csv`` lists that
UniMed-CLIP's ``breast_us`` reads (``finding`` keeps the folder). Rows of lesion images carry ``mask``:
the published mask when there is one, else the union (pixelwise maximum) of its masks, written to
``masks/busi/`` beside the manifest; normal images (empty masks) have none. Each image is its own
patient (BUSI publishes no patient ids). A copy without the ``_mask`` files (resized
redistributions) prepares with a warning that grounding metrics will be skipped. ``--list``: a fold's
test CSV (``filename,label`` with ``images/<class> (N).png``), whose rows become the test split.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import DataError
from .common import Adapter, apply_test_list, list_entries, natural_key, patient_split, require, save_png

CLASSES = ("benign", "malignant")
FOLDERS = ("benign", "malignant", "normal")
IMAGE = re.compile(r"^(benign|malignant|normal) \(\d+\)\.png$")
LAYOUT = ('Dataset_BUSI_with_GT/{benign,malignant,normal}/"<class> (N).png" with "<class> (N)_mask.png" '
          '(and _mask_1.png, ... for extra lesions; without masks, no grounding); --root is Dataset_BUSI_with_GT '
          'or the folder holding it')


def _mask(image: Path, out_dir: Path) -> Path | None:
    masks = sorted(image.parent.glob(f"{image.stem}_mask*.png"), key=natural_key)
    if not masks:
        return None
    if len(masks) == 1:
        return masks[0]
    from PIL import Image

    union = np.maximum.reduce([np.asarray(Image.open(m).convert("L")) for m in masks])
    return save_png(Image.fromarray(union), out_dir / "masks" / "busi" / f"{image.stem}_mask_union.png")


def _mask_warnings(rows: list[dict], base: Path) -> list[str]:
    """A line when no lesion image has a mask (a copy without them), or when some lack one."""
    lesions = [r for r in rows if r["finding"] != "normal"]
    unmasked = sum("mask" not in r for r in lesions)
    if unmasked == len(lesions):
        return [f"breast-us: no masks found under {base}: grounding metrics will be skipped"]
    return [f"breast-us: {unmasked} of {len(lesions)} lesion images have no _mask file"] if unmasked else []


def read(root: Path, out_dir: Path, seed: int, list_file: Path | None):
    base = root / "Dataset_BUSI_with_GT" if (root / "Dataset_BUSI_with_GT").is_dir() else root
    rows = []
    for folder in FOLDERS:
        for image in sorted(require("breast-us", base / folder, LAYOUT).glob("*.png"), key=natural_key):
            if not IMAGE.match(image.name):
                continue  # a mask
            row = {"image": image, "labels": ["malignant" if folder == "malignant" else "benign"],
                   "patient": image.stem, "finding": folder}
            if folder != "normal" and (mask := _mask(image, out_dir)) is not None:
                row["mask"] = mask
            rows.append(row)
    if not rows:
        raise DataError(f"breast-us: no '<class> (N).png' image under {base} (expected: {LAYOUT})")
    warnings = _mask_warnings(rows, base)
    if list_file is None:
        patient_split(rows, seed, "breast-us")
        return rows, warnings
    by_name = {r["image"].name: r for r in rows}
    listed = []
    for path, label in list_entries("breast-us", list_file, {c: c for c in CLASSES}):
        row = by_name.get(Path(path).name)
        if row is None:
            raise DataError(f"breast-us: {list_file}: {path} is not a BUSI image under {base}")
        listed.append({**row, "labels": [label]})
    rows, more = apply_test_list("breast-us", rows, listed, seed)
    return rows, warnings + more


ADAPTER = Adapter("breast-us", "ultrasound", CLASSES, LAYOUT, read, "breast-us")
