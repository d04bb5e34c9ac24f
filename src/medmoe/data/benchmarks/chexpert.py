"""CheXpert 5x200: GLoRIA's zero-shot set (Huang et al. 2021, ``preprocess_chexpert_5x200_data``).

From the training labels: frontal views whose five competition observations are exactly one 1.0 and
four 0.0, and whose eight other observations (all but No Finding) are 0.0 too; a blank counts as 0.0
(GLoRIA's ``fillna(0)``), so any uncertain (-1.0) observation excludes the row. 200 per class are
drawn with a seed; a class with fewer gives all of them and a warning. ``--list`` takes a fixed
selection instead (UniMed-CLIP's ``local_data/chexpert-5x200.csv``: ``imgpath`` and the observation
columns). Splits: seeded, stratified by patient (the ``patientNNNNN`` folder of the path).

Layouts: ``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/`` with ``train.csv`` and ``train/patientNNNNN/``;
or Stanford AIMI's current full-resolution release as unpacked (``chexpertchestxrays-u20210408/``):
``train_cheXbert.csv`` and ``train_visualCheXbert.csv`` beside the folders ``CheXpert-v1.0 batch 2
(train 1)`` to ``batch 4 (train 3)``, which split the ``patientNNNNN/`` folders between them
(``batch 1 (validate & csv)`` holds ``valid/`` and may hold CSVs too). The labels file is the first
found of ``LABEL_FILES``: ``train.csv`` (the CheXpert labeler, what GLoRIA drew from), then
``train_cheXbert.csv`` (CheXbert, same 1.0/0.0/-1.0/blank coding), then ``train_visualCheXbert.csv``
(0/1 only: nothing is excluded as uncertain); the latter two come with a warning. A ``Path``
(``CheXpert-v1.0-small/train/...``, ``CheXpert-v1.0/train/...``) is found by its ``patientNNNNN/...``
part in an index of the patient folders under ``train/``, ``CheXpert-v1.0*/train/`` and the batch
folders, so any release's paths (and ``--list``) resolve against any release's images.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np

from ...errors import ConfigError, DataError
from ...seeding import derive_seed
from ..tables import read_rows
from .common import Adapter, missing, patient_split

TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")  # GLoRIA's competition tasks
OTHERS = ("Enlarged Cardiomediastinum", "Lung Lesion", "Lung Opacity", "Pneumonia", "Pneumothorax",
          "Pleural Other", "Fracture", "Support Devices")
PER_CLASS = 200
LABEL_FILES = ("train.csv", "train_cheXbert.csv", "train_visualCheXbert.csv")  # in order of preference
FOLDERS = ("CheXpert-v1.0-small", "CheXpert-v1.0", "chexpertchestxrays-u20210408")
BATCHES = "CheXpert-v1.0 batch *"
PATIENT_FOLDERS = ("train/patient*", "CheXpert-v1.0*/train/patient*", f"{BATCHES}/patient*")
PATIENT = re.compile(r"patient\d+")
LAYOUT = ("CheXpert-v1.0-small/ (or CheXpert-v1.0/) as unpacked: train.csv (Path, Frontal/Lateral and the 14 "
          "observation columns: 1.0, 0.0, -1.0 or blank) and train/patientNNNNN/studyN/viewN_frontal.jpg; or the "
          "current full release (chexpertchestxrays-u20210408/): train_cheXbert.csv or train_visualCheXbert.csv "
          "beside 'CheXpert-v1.0 batch N (train M)/patientNNNNN/...'; --root is that folder or the one holding it")


def _value(record: dict, column: str) -> float:
    """An observation cell: 1.0, 0.0, -1.0, or blank = 0 (GLoRIA's fillna(0)); ValueError naming the column."""
    cell = (record[column] or "").strip()
    try:
        return float(cell) if cell else 0.0
    except ValueError:
        raise ValueError(f"column {column!r} is {cell!r}, not 1.0, 0.0, -1.0 or blank") from None


def gloria_class(record: dict) -> str | None:
    """The one class of a row GLoRIA's 5x200 selection keeps, else None (view not checked here)."""
    values = {c: _value(record, c) for c in TASKS + OTHERS}
    positive = [c for c in TASKS if values[c] == 1.0]
    if len(positive) != 1 or any(v != 0.0 for c, v in values.items() if c != positive[0]):
        return None
    return positive[0]


def _labels_file(root: Path) -> Path:
    """The preferred labels file under ``root``, its ``FOLDERS`` or their batch folders."""
    places = [root, *(root / f for f in FOLDERS)]
    places += [batch for place in places for batch in sorted(place.glob(BATCHES))]
    for name in LABEL_FILES:
        for place in places:
            if (place / name).is_file():
                return place / name
    raise DataError(f"chexpert-5x200: no {', '.join(LABEL_FILES[:-1])} or {LABEL_FILES[-1]} under {root} "
                    f"(expected: {LAYOUT})")


def _patients(base: Path) -> dict[str, Path]:
    """patientNNNNN -> its folder, wherever the release put it under ``base``."""
    return {p.name: p for pattern in PATIENT_FOLDERS for p in base.glob(pattern) if p.is_dir()}


def _patient(path: str) -> tuple[str | None, tuple[str, ...]]:
    """(patientNNNNN, the parts after it) of a CSV ``Path``; (None, ()) when it names no patient."""
    parts = PurePosixPath(path.strip().replace("\\", "/")).parts
    at = next((i for i, part in enumerate(parts) if PATIENT.fullmatch(part)), None)
    return (None, ()) if at is None else (parts[at], parts[at + 1:])


def _listed(list_file: Path) -> list[tuple[str, str]]:
    if not list_file.is_file():
        raise ConfigError(f"chexpert-5x200: --list file not found: {list_file}")
    records = read_rows(list_file, "chexpert-5x200", TASKS)
    key = "imgpath" if records and "imgpath" in records[0] else "Path"
    out = []
    for n, rec in enumerate(records, start=1):
        try:
            positive = [c for c in TASKS if _value(rec, c) == 1.0]
        except ValueError as exc:
            raise DataError(f"chexpert-5x200: {list_file} row {n}: {exc}") from None
        if len(positive) != 1:
            raise DataError(f"chexpert-5x200: {list_file} row {n}: expected exactly one of {', '.join(TASKS)} = 1")
        out.append((rec[key], positive[0]))
    return out


def _selected(records: list[dict], seed: int, labels: Path) -> tuple[list[tuple[str, str]], list[str]]:
    pools: dict[str, list[str]] = {c: [] for c in TASKS}
    for row, rec in enumerate(records, start=1):
        try:
            cls = gloria_class(rec)
        except ValueError as exc:
            raise DataError(f"chexpert-5x200: {labels} row {row}: {exc}") from None
        if rec["Frontal/Lateral"] == "Frontal" and cls:
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
    labels = _labels_file(root)
    base = labels.parent.parent if labels.parent.match(BATCHES) else labels.parent
    if list_file is not None:
        chosen, warnings = _listed(list_file), []
    else:
        records = read_rows(labels, "chexpert-5x200", ("Path", "Frontal/Lateral", *TASKS, *OTHERS))
        chosen, warnings = _selected(records, seed, labels)
        if labels.name != LABEL_FILES[0]:
            warnings.insert(0, f"chexpert-5x200: no train.csv; GLoRIA's rule is applied to {labels}'s labels instead")
    patients, rows = _patients(base), []
    for path, cls in chosen:
        patient, rest = _patient(path)
        if patient not in patients:
            raise missing("chexpert-5x200", f"{path} (patient folder {patient or '?'} under {base})", LAYOUT)
        image = patients[patient].joinpath(*rest)
        if not image.is_file():
            raise missing("chexpert-5x200", image, LAYOUT)
        rows.append({"image": image, "labels": [cls], "patient": patient})
    patient_split(rows, seed, "chexpert-5x200")
    return rows, warnings


ADAPTER = Adapter("chexpert-5x200", "xray", TASKS, LAYOUT, read, "chexpert-5x200")
