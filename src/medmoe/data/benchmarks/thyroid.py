"""Thyroid ultrasound: the DDTI database (Pedraza et al. 2015, "An open-access thyroid ultrasound image
database", Universidad Nacional de Colombia), the thyroid task of RadImageNet that UniMed-CLIP's
``thyroid_us`` evaluation reads (``thyroid_test_fold1.csv``: ``img_dir,label`` with
``images/<case>_<n>.jpg`` and benign/malignant).

Published layout: one folder of ``<case>.xml`` (``<number>``, ``<tirads>``, and one ``<mark>`` per image
with ``<image>`` n and ``<svg>``, a JSON list of nodule outlines ``{"points": [{"x", "y"}, ...]}``) and
``<case>_<n>.jpg``. The class follows the TI-RADS category: 2 and 3 benign, 4a, 4b, 4c and 5 malignant
(cases without a category are left out, with a warning). Each image's nodule outlines are filled into
one mask, ``masks/ddti/<case>_<n>.png`` beside the manifest. A case XML that does not parse is left
out, and so is an image its mark names that is not on disk or whose outline is not that JSON, each with
a warning line naming it (as public DDTI loaders skip them). The folder may also sit in ``DDTI/`` under
``--root`` (the Kaggle copy). Splits: seeded, stratified by case; ``--list`` takes a fold's test CSV
(its labels win).
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from ...errors import DataError
from ..corpora.common import child
from .common import Adapter, apply_test_list, list_entries, natural_key, patient_split, save_png

CLASSES = ("benign", "malignant")
TIRADS = {"2": "benign", "3": "benign", "4a": "malignant", "4b": "malignant", "4c": "malignant", "5": "malignant"}
LAYOUT = ("the DDTI folder: <case>.xml (number, tirads, mark/image, mark/svg) and <case>_<n>.jpg; "
          "--root is that folder or the one holding it as DDTI/ (the Kaggle copy)")


def _folder(root: Path) -> Path:
    """``root`` when it holds the case XMLs, else its ``DDTI/`` folder (the Kaggle copy) if it has one."""
    if any(root.glob("*.xml")):
        return root
    return child(root, "DDTI") or root


def _outlines(svg: str | None, where: str) -> list[list[tuple[float, float]]]:
    """The outlines of a mark's ``svg``: a JSON list of ``{"points": [{"x", "y"}, ...]}`` (empty: none)."""
    if not (svg or "").strip():
        return []
    try:
        return [[(float(p["x"]), float(p["y"])) for p in shape["points"]] for shape in json.loads(svg)]
    except (ValueError, TypeError, KeyError):  # not JSON, or not that shape
        raise DataError(f"thyroid-us: {where}: svg is not a JSON list of {{points: [{{x, y}}, ...]}}") from None


def _mask(image: Path, outlines, out_dir: Path) -> Path | None:
    from PIL import Image, ImageDraw

    outlines = [o for o in outlines if len(o) >= 3]
    if not outlines:
        return None
    try:
        with Image.open(image) as im:
            mask = Image.new("L", im.size, 0)
    except OSError as exc:
        raise DataError(f"thyroid-us: {image.name}: not a readable image ({exc})") from None
    draw = ImageDraw.Draw(mask)
    for outline in outlines:
        draw.polygon(outline, fill=255)
    return save_png(mask, out_dir / "masks" / "ddti" / f"{image.stem}.png")


def _image_row(folder: Path, xml: Path, number: str, cls: str, mark, out_dir: Path) -> dict:
    """The row of one ``<mark>``: its image, class, case and mask."""
    n = (mark.findtext("image") or "").strip()
    image = folder / f"{number}_{n}.jpg"
    if not image.is_file():
        raise DataError(f"thyroid-us: {xml.name} names {image.name}, which is not in {folder}")
    row = {"image": image, "labels": [cls], "patient": number}
    if (mask := _mask(image, _outlines(mark.findtext("svg"), f"{xml.name} mark {n}"), out_dir)) is not None:
        row["mask"] = mask
    return row


def read(root: Path, out_dir: Path, seed: int, list_file: Path | None):
    folder = _folder(root)
    cases = sorted(folder.glob("*.xml"), key=natural_key)
    if not cases:
        raise DataError(f"thyroid-us: no <case>.xml under {root} (expected: {LAYOUT})")
    rows, left_out, unrated = [], [], 0
    for xml in cases:
        try:
            case = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            left_out.append(f"thyroid-us: {xml}: not valid XML ({exc}); case left out")
            continue
        cls = TIRADS.get((case.findtext("tirads") or "").strip().lower())
        if cls is None:
            unrated += 1
            continue
        number = (case.findtext("number") or xml.stem).strip()
        for mark in case.iter("mark"):
            try:
                rows.append(_image_row(folder, xml, number, cls, mark, out_dir))
            except DataError as exc:
                left_out.append(f"{exc}; image left out")
    warnings = left_out + ([f"thyroid-us: left out {unrated} cases without a TI-RADS category"] if unrated else [])
    if list_file is None:
        patient_split(rows, seed, "thyroid-us")
        return rows, warnings
    by_name = {r["image"].name: r for r in rows}
    listed = []
    for path, label in list_entries("thyroid-us", list_file, {c: c for c in CLASSES}):
        if Path(path).name not in by_name:
            raise DataError(f"thyroid-us: {list_file}: {path} is not a rated DDTI image under {folder}")
        listed.append({**by_name[Path(path).name], "labels": [label]})
    rows, more = apply_test_list("thyroid-us", rows, listed, seed)
    return rows, warnings + more


ADAPTER = Adapter("thyroid-us", "ultrasound", CLASSES, LAYOUT, read, "thyroid-us")
