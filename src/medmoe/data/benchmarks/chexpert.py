"""CheXpert 5x200: GLoRIA's zero-shot set (Huang et al. 2021, ``preprocess_chexpert_5x200_data``).

From ``train.csv``: frontal views whose five competition observations are exactly one 1.0 and four
0.0, and whose eight other observations (all but No Finding) are 0.0 too; a blank counts as 0.0
(GLoRIA's ``fillna(0)``), so any uncertain (-1.0) observation excludes the row. 200 per class are
drawn with a seed; a class with fewer gives all of them and a warning. ``--list`` takes a fixed
selection instead (UniMed-CLIP's ``local_data/chexpert-5x200.csv``: ``imgpath`` and the observation
columns). Splits: seeded, stratified by patient (``patientNNNNN`` of the path).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ...seeding import derive_seed
from ..tables import read_rows
from .common import Adapter, dataset_root, missing, patient_split, require

TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")  # GLoRIA's competition tasks
OTHERS = ("Enlarged Cardiomediastinum", "Lung Lesion", "Lung Opacity", "Pneumonia", "Pneumothorax",
          "Pleural Other", "Fracture", "Support Devices")
PER_CLASS = 200
FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0")
PATIENT = re.compile(r"patient\d+")
LAYOUT = ("CheXpert-v1.0-small/ (or CheXpert-v1.0/) as unpacked: train.csv (Path, Frontal/Lateral and the 14 "
          "observation columns: 1.0, 0.0, -1.0 or blank) and train/patientNNNNN/studyN/viewN_frontal.jpg; "
          "--root is that folder or the one holding it")


def _value(cell: str) -> float:
    return float(cell) if cell and cell.strip() else 0.0  # blank = 0 (GLoRIA's fillna(0))


def gloria_class(record: dict) -> str | None:
    """The one class of a row GLoRIA's 5x200 selection keeps, else None (view not checked here)."""
    values = {c: _value(record[c]) for c in TASKS + OTHERS}
    positive = [c for c in TASKS if values[c] == 1.0]
    if len(positive) != 1 or any(v != 0.0 for c, v in values.items() if c != positive[0]):
        return None
    return positive[0]


def _image(folder: Path, path: str) -> Path:
    """``Path`` as written in the CSV (``CheXpert-v1.0-small/train/...``), under the folder holding the
    dataset, or under the dataset folder itself when it was renamed."""
    inside = folder.parent / path
    return inside if inside.exists() else folder / Path(*Path(path).parts[1:])


def _listed(list_file: Path) -> list[tuple[str, str]]:
    if not list_file.is_file():
        raise ConfigError(f"chexpert-5x200: --list file not found: {list_file}")
    records = read_rows(list_file, "chexpert-5x200", TASKS)
    key = "imgpath" if records and "imgpath" in records[0] else "Path"
    out = []
    for n, rec in enumerate(records, start=2):
        positive = [c for c in TASKS if _value(rec[c]) == 1.0]
        if len(positive) != 1:
            raise DataError(f"chexpert-5x200: {list_file} row {n}: expected exactly one of {', '.join(TASKS)} = 1")
        out.append((rec[key], positive[0]))
    return out


def _selected(records: list[dict], seed: int) -> tuple[list[tuple[str, str]], list[str]]:
    pools: dict[str, list[str]] = {c: [] for c in TASKS}
    for rec in records:
        if rec["Frontal/Lateral"] == "Frontal" and (cls := gloria_class(rec)):
            pools[cls].append(rec["Path"])
    chosen, short = [], []
    for cls, pool in pools.items():
        if len(pool) < PER_CLASS:
            short.append(f"{cls} ({len(pool)})")
        rng = np.random.default_rng(derive_seed(seed, "chexpert-5x200", cls))
        chosen += [(pool[i], cls) for i in rng.choice(len(pool), size=min(PER_CLASS, len(pool)), replace=False)]
    warnings = [f"chexpert-5x200: fewer than {PER_CLASS} eligible images for {', '.join(short)}; took all of them"]
    return chosen, warnings if short else []


def read(root: Path, out_dir: Path, seed: int, list_file: Path | None):
    folder = dataset_root(root, "train.csv", FOLDERS)
    csv_path = require("chexpert-5x200", folder / "train.csv", LAYOUT)
    if list_file is not None:
        chosen, warnings = _listed(list_file), []
    else:
        records = read_rows(csv_path, "chexpert-5x200", ("Path", "Frontal/Lateral", *TASKS, *OTHERS))
        chosen, warnings = _selected(records, seed)
    rows = []
    for path, cls in chosen:
        image = _image(folder, path)
        if not image.is_file():
            raise missing("chexpert-5x200", image, LAYOUT)
        patient = PATIENT.search(path)
        rows.append({"image": image, "labels": [cls], "patient": patient.group() if patient else path})
    patient_split(rows, seed, "chexpert-5x200")
    return rows, warnings


ADAPTER = Adapter("chexpert-5x200", "xray", TASKS, LAYOUT, read, "chexpert-5x200")
