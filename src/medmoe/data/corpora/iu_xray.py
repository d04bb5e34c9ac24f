"""IU X-ray / Open-i chest radiographs (Demner-Fushman et al., JAMIA 2016) as openi.nlm.nih.gov ships them.

Layout under ROOT (NLMCXR_reports.tgz and NLMCXR_png.tgz unpacked)::

    ecgen-radiology/1.xml ...   <AbstractText Label="FINDINGS">...</AbstractText>, Label="IMPRESSION",
                                <parentImage id="CXR1_1_IM-0001-3001"> per image of the report
    NLMCXR_png/CXR1_1_IM-0001-3001.png   (or the PNGs directly in ROOT)

One row per image, with its report's FINDINGS and IMPRESSION (either may be missing; a report with
neither is skipped). Modality: x-ray. Open-i has no split: a seeded split by report, so the
frontal and lateral views of one report share a split.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ...errors import DataError
from .common import Collection, layout_error, seeded_split

LAYOUT = "ecgen-radiology/*.xml and NLMCXR_png/*.png (Open-i NLMCXR_reports.tgz, NLMCXR_png.tgz)"
SECTIONS = ("FINDINGS", "IMPRESSION")


def report_text(tree: ET.Element) -> str:
    sections = {(e.get("Label") or "").upper(): " ".join("".join(e.itertext()).split()) for e in tree.iter("AbstractText")}
    return " ".join(sections[name] for name in SECTIONS if sections.get(name))


def read(root: Path, seed: int = 0) -> Collection:
    reports = sorted((root / "ecgen-radiology").glob("*.xml"))
    if not reports:
        raise layout_error("iu-xray", root, "ecgen-radiology/*.xml", LAYOUT)
    images = root / "NLMCXR_png" if (root / "NLMCXR_png").is_dir() else root
    out = Collection("iu-xray")
    for path in reports:
        try:
            tree = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise DataError(f"iu-xray: {path}: invalid XML ({exc})") from None
        ids = [e.get("id") for e in tree.iter("parentImage") if e.get("id")]
        if not ids:
            out.skipped["report without image"] += 1
        text, split = report_text(tree), seeded_split(path.stem, seed)
        for image_id in ids:
            out.add(images / f"{image_id}.png", text, split, modality="xray", report_id=path.stem)
    return out
