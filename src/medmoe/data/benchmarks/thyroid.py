"""Thyroid ultrasound: the DDTI database (Pedraza et al. 2015, "An open-access thyroid ultrasound image
database", Universidad Nacional de Colombia), the thyroid task of RadImageNet that UniMed-CLIP's
``thyroid_us`` evaluation reads (``thyroid_test_fold1.csv``: ``img_dir,label`` with
``images/<case>_<n>.jpg`` and benign/malignant).

Published layout: one folder of ``<case>.xml`` (``<number>``, ``<tirads>``, and one ``<mark>`` per image
with ``<image>`` n and ``<svg>``, a JSON list of nodule outlines ``{"points": [{"x", "y"}, ...]}``) and
``<case>_<n>.jpg``. The class follows the TI-RADS category: 2 and 3 benign, 4a, 4b, 4c and 5 malignant
(cases without a category are left out, with a warning). Each image's nodule outlines are filled into
one mask, ``masks/ddti/<case>_<n>.png`` beside the manifest. Splits: seeded, stratified by case;
``--list`` takes a fold's test CSV (its labels win).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from ...errors import DataError
from .common import Adapter, apply_test_list, list_entries, natural_key, patient_split, save_png

CLASSES = ("benign", "malignant")
TIRADS = {"2": "benign", "3": "benign", "4a": "malignant", "4b": "malignant", "4c": "malignant", "5": "malignant"}
LAYOUT = ("the DDTI folder: <case>.xml (number, tirads, mark/image, mark/svg) and <case>_<n>.jpg; "
          "--root is that folder")


def _outlines(svg: str | None) -> list[list[tuple[float, float]]]:
    try:
        shapes = json.loads(svg or "")
    except json.JSONDecodeError:
        return []
    return [[(p["x"], p["y"]) for p in s.get("points", [])] for s in shapes if isinstance(s, dict)]


def _mask(image: Path, outlines, out_dir: Path) -> Path | None:
    from PIL import Image, ImageDraw

    outlines = [o for o in outlines if len(o) >= 3]
    if not outlines:
        return None
    with Image.open(image) as im:
        mask = Image.new("L", im.size, 0)
    draw = ImageDraw.Draw(mask)
    for outline in outlines:
        draw.polygon(outline, fill=255)
    return save_png(mask, out_dir / "masks" / "ddti" / f"{image.stem}.png")


def read(root: Path, out_dir: Path, seed: int, list_file: Path | None):
    cases = sorted(root.glob("*.xml"), key=natural_key)
    if not cases:
        raise DataError(f"thyroid-us: no <case>.xml under {root} (expected: {LAYOUT})")
    rows, unrated = [], 0
    for xml in cases:
        try:
            case = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            raise DataError(f"thyroid-us: {xml}: not valid XML ({exc})") from None
        cls = TIRADS.get((case.findtext("tirads") or "").strip().lower())
        if cls is None:
            unrated += 1
            continue
        number = (case.findtext("number") or xml.stem).strip()
        for mark in case.iter("mark"):
            image = root / f"{number}_{(mark.findtext('image') or '').strip()}.jpg"
            if not image.is_file():
                raise DataError(f"thyroid-us: {xml.name} names {image.name}, which is not in {root}")
            row = {"image": image, "labels": [cls], "patient": number}
            if (mask := _mask(image, _outlines(mark.findtext("svg")), out_dir)) is not None:
                row["mask"] = mask
            rows.append(row)
    warnings = [f"thyroid-us: left out {unrated} cases without a TI-RADS category"] if unrated else []
    if list_file is None:
        patient_split(rows, seed, "thyroid-us")
        return rows, warnings
    by_name = {r["image"].name: r for r in rows}
    listed = []
    for path, label in list_entries("thyroid-us", list_file, {c: c for c in CLASSES}):
        if Path(path).name not in by_name:
            raise DataError(f"thyroid-us: {list_file}: {path} is not a rated DDTI image under {root}")
        listed.append({**by_name[Path(path).name], "labels": [label]})
    rows, more = apply_test_list("thyroid-us", rows, listed, seed)
    return rows, warnings + more


ADAPTER = Adapter("thyroid-us", "ultrasound", CLASSES, LAYOUT, read, "thyroid-us")
