"""RSNA Pneumonia Detection Challenge (stage 2 training set): one row per patient.

The labels file has one row per box (``Target`` 1) or one row with empty box and ``Target`` 0; the
patient's class is Pneumonia when any row has ``Target`` 1 (as GLoRIA's ``preprocess_pneumonia_data``).
Rows keep ``boxes`` ([x, y, width, height] in pixels of the DICOM, for grounding) and ``finding``
(the detailed class: Lung Opacity, No Lung Opacity / Not Normal or Normal). Splits: seeded, stratified
by patient; ``--list`` names the test patients (any CSV with the patientId or ``<patientId>.dcm`` /
``.png`` in some column, e.g. UniMed-CLIP's balanced test file).
"""
from __future__ import annotations

from pathlib import Path

from ...errors import ConfigError, DataError
from ..tables import read_cells, read_rows
from .common import Adapter, apply_test_list, missing, patient_split, require

CLASSES = ("Normal", "Pneumonia")
LAYOUT = ("stage_2_train_labels.csv (patientId,x,y,width,height,Target; one row per box), "
          "stage_2_detailed_class_info.csv (patientId,class) and stage_2_train_images/<patientId>.dcm")


def _test_patients(list_file: Path, known: set[str]) -> set[str]:
    if not list_file.is_file():
        raise ConfigError(f"rsna-pneumonia: --list file not found: {list_file}")
    chosen = set()
    for n, cells in enumerate(read_cells(list_file)[1:], start=2):
        ids = [Path(c.strip()).stem for c in cells if Path(c.strip()).stem in known]
        if not ids:
            raise DataError(f"rsna-pneumonia: {list_file} row {n}: no patientId of the labels file")
        chosen.add(ids[0])
    return chosen


def read(root: Path, out_dir: Path, seed: int, list_file: Path | None):
    labels_path = require("rsna-pneumonia", root / "stage_2_train_labels.csv", LAYOUT)
    info_path = require("rsna-pneumonia", root / "stage_2_detailed_class_info.csv", LAYOUT)
    images = require("rsna-pneumonia", root / "stage_2_train_images", LAYOUT)
    records = read_rows(labels_path, "rsna-pneumonia", ("patientId", "x", "y", "width", "height", "Target"))
    info = read_rows(info_path, "rsna-pneumonia", ("patientId", "class"))
    finding = {r["patientId"]: r["class"] for r in info}
    patients: dict[str, dict] = {}
    for n, rec in enumerate(records, start=2):  # row 1 is the header
        pid = rec["patientId"]
        row = patients.setdefault(pid, {"image": images / f"{pid}.dcm", "labels": [CLASSES[0]], "patient": pid,
                                        "boxes": [], "finding": finding.get(pid)})
        if rec["Target"].strip() == "1":
            row["labels"] = [CLASSES[1]]
            try:
                row["boxes"].append([float(rec[k]) for k in ("x", "y", "width", "height")])
            except ValueError:
                raise DataError(f"rsna-pneumonia: {labels_path} row {n}: a box needs numeric x, y, width, height "
                                f"(got {[rec[k] for k in ('x', 'y', 'width', 'height')]})") from None
    rows = list(patients.values())
    for row in rows:
        if not row["image"].is_file():
            raise missing("rsna-pneumonia", row["image"], LAYOUT)
    if list_file is None:
        patient_split(rows, seed, "rsna-pneumonia")
        return rows, []
    test = _test_patients(list_file, set(patients))
    return apply_test_list("rsna-pneumonia", rows, [r for r in rows if r["patient"] in test], seed)


ADAPTER = Adapter("rsna-pneumonia", "xray", CLASSES, LAYOUT, read, "rsna-pneumonia")
