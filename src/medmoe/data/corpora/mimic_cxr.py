"""MIMIC-CXR-JPG 2.0.0 (Johnson et al., 2019) as PhysioNet ships it, with the free-text reports of
MIMIC-CXR 2.0.0 (mimic-cxr-reports.zip) unpacked into the same ROOT.

Layout under ROOT::

    mimic-cxr-2.0.0-split.csv[.gz]      dicom_id,study_id,subject_id,split
    mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id,subject_id,study_id,...,ViewPosition,...
    files/p10/p10000032/s50414267/<dicom_id>.jpg
    files/p10/p10000032/s50414267.txt   (the report; also read from mimic-cxr-reports/files/...)

One row per image: the report's FINDINGS and IMPRESSION sections when it has either, else its
whole text. Modality: x-ray; ``view`` is the metadata's ViewPosition. The split is the
publisher's (validate -> val).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..tables import read_rows
from .common import SPLIT_NAMES, Collection, layout_error

LAYOUT = ("mimic-cxr-2.0.0-split.csv[.gz], mimic-cxr-2.0.0-metadata.csv[.gz], files/pXX/pSUBJECT/sSTUDY/DICOM.jpg "
          "and files/pXX/pSUBJECT/sSTUDY.txt (MIMIC-CXR-JPG 2.0.0 + mimic-cxr-reports.zip)")
HEADING = re.compile(r"^\s*([A-Z][A-Z /&-]+):", re.MULTILINE)  # "FINDINGS:", "IMPRESSION:", "WET READ:"


def report_sections(text: str) -> str:
    """FINDINGS + IMPRESSION when the report has either, else the whole text without its banner."""
    heads = list(HEADING.finditer(text))
    sections = {}
    for head, after in zip(heads, heads[1:] + [None]):
        sections.setdefault(head.group(1).strip(), text[head.end(): after.start() if after else len(text)])
    kept = [" ".join(sections[name].split()) for name in ("FINDINGS", "IMPRESSION") if sections.get(name, "").strip()]
    if kept:
        return " ".join(kept)
    return " ".join(re.sub(r"^\s*FINAL REPORT\s*", "", text).split())


def _table(root: Path, name: str) -> Path:
    for path in (root / f"{name}.csv.gz", root / f"{name}.csv"):
        if path.is_file():
            return path
    raise layout_error("mimic-cxr", root, f"{name}.csv[.gz]", LAYOUT)


def read(root: Path, seed: int = 0) -> Collection:
    columns = ("dicom_id", "study_id", "subject_id")
    splits = read_rows(_table(root, "mimic-cxr-2.0.0-split"), "mimic-cxr", columns + ("split",))
    views = {r["dicom_id"]: r.get("ViewPosition", "")
             for r in read_rows(_table(root, "mimic-cxr-2.0.0-metadata"), "mimic-cxr", columns)}
    if not (root / "files").is_dir():
        raise layout_error("mimic-cxr", root, "files/", LAYOUT)
    report_roots = [root, root / "mimic-cxr-reports"]
    reports: dict[str, str] = {}
    out = Collection("mimic-cxr")
    for row in splits:
        subject, study = f"p{row['subject_id']}", f"s{row['study_id']}"
        folder = Path("files") / subject[:3] / subject
        if study not in reports:
            path = next((r / folder / f"{study}.txt" for r in report_roots if (r / folder / f"{study}.txt").is_file()), None)
            reports[study] = report_sections(path.read_text(encoding="utf-8", errors="replace")) if path else ""
        out.add(root / folder / study / f"{row['dicom_id']}.jpg", reports[study],
                SPLIT_NAMES.get(row["split"].strip().lower(), "train"), modality="xray",
                view=views.get(row["dicom_id"], ""), study_id=row["study_id"], subject_id=row["subject_id"])
    return out
