"""What every benchmark adapter shares: the adapter record, layout checks, the seeded patient-level
split and the fixed test lists (``--list``)."""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import ConfigError, DataError
from ...files import atomic_write
from ...seeding import derive_seed
from ..tables import read_cells

SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}  # GLoRIA's preprocessing (test_fac=0.15)
VAL_FRACTION = 0.15  # of the rows left for train/val when the test split is given


@dataclass(frozen=True)
class Adapter:
    """One benchmark dataset as its publisher distributes it.

    ``read(root, out_dir, seed, list_file, **options)`` returns ``(rows, warnings)``: each row a dict
    with ``image`` (absolute Path), ``labels`` ([class]), ``split``, ``patient`` and any extra columns
    (``mask`` as an absolute Path); ``out_dir`` is the manifest's folder, for files the adapter derives.
    """

    name: str
    modality: str
    classes: tuple[str, ...] | None  # None: the classes are read from the source (MediMeTA)
    layout: str  # the expected layout under --root, for --help and errors
    read: Callable
    prompts: str | None  # prompt file stem under medmoe/data/prompts/ (None: a grounding set, no Tables 1-2)
    options: tuple[str, ...] = ()  # keyword options ``read`` accepts (e.g. MRNet's plane and slice)


def missing(name: str, what: Path | str, layout: str | None = None) -> DataError:
    hint = f" (expected: {layout})" if layout else ""
    return DataError(f"{name}: {what} not found{hint}")


def require(name: str, path: Path, layout: str | None = None) -> Path:
    if not path.exists():
        raise missing(name, path, layout)
    return path


def save_png(image, target: Path) -> Path:
    """Write the PIL ``image`` as PNG to ``target`` (folders made) atomically, so an interrupted
    prepare leaves no half-written file for the next one to reuse."""
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: image.save(tmp, format="PNG"))
    return target


def patient_split(rows: list[dict], seed: int, key: str, fractions: dict[str, float] = SPLIT_FRACTIONS) -> None:
    """Set ``split`` of every row: patients are shuffled within each class (the class of the patient's
    first row) with a seed derived from ``(seed, key, class)`` and cut by ``fractions``, so all rows of a
    patient share a split and each split keeps the class mix."""
    patients: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        patients[row["patient"]].append(row)
    by_class: dict[str, list[str]] = defaultdict(list)
    for patient, own in patients.items():
        by_class[own[0]["labels"][0]].append(patient)
    names = list(fractions)
    for cls, members in sorted(by_class.items()):
        order = np.random.default_rng(derive_seed(seed, key, cls)).permutation(sorted(members))
        bounds = np.round(np.cumsum([fractions[n] for n in names]) * len(order)).astype(int)
        for i, patient in enumerate(order):
            split = names[int(np.searchsorted(bounds, i, side="right"))]
            for row in patients[patient]:
                row["split"] = split


def apply_test_list(name: str, rows: list[dict], listed: list[dict], seed: int) -> tuple[list[dict], list[str]]:
    """A fixed test list (UniMed-CLIP's fold-1 test CSV): the ``listed`` rows are the test split; the
    other rows are split train/val by patient; unlisted rows of a listed patient are dropped (no patient
    in two splits). Returns (rows, warnings)."""
    test_patients = {row["patient"] for row in listed}
    listed_images = {row["image"] for row in listed}
    rest = [r for r in rows if r["patient"] not in test_patients]
    dropped = sum(1 for r in rows if r["patient"] in test_patients and r["image"] not in listed_images)
    patient_split(rest, seed, name, {"train": 1 - VAL_FRACTION, "val": VAL_FRACTION})
    for row in listed:
        row["split"] = "test"
    warnings = [f"{name}: dropped {dropped} unlisted rows of the listed test patients"] if dropped else []
    return rest + listed, warnings


def list_entries(name: str, path: Path, label_map: dict[str, str]) -> list[tuple[str, str]]:
    """(image path, class) of each row of a two-column test list (``image,label`` with a header, as
    RadImageNet's/UniMed-CLIP's ``*_test_fold1.csv``); labels are mapped by ``label_map``."""
    if not path.is_file():
        raise ConfigError(f"{name}: --list file not found: {path}")
    entries = []
    for n, cells in enumerate(read_cells(path)[1:], start=2):
        if not cells:
            continue
        label = label_map.get(cells[1].strip().lower()) if len(cells) > 1 else None
        if label is None:
            raise DataError(f"{name}: {path} row {n}: label must be one of {', '.join(sorted(label_map))}")
        entries.append((cells[0].strip(), label))
    return entries


def natural_key(path: Path):
    """Sort key: ``benign (2)`` before ``benign (10)``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def dataset_root(root: Path, marker: str, folders) -> Path:
    """``root`` itself when it holds ``marker``, else the first of ``root/<folder>`` that does."""
    for candidate in [root, *(root / f for f in folders)]:
        if (candidate / marker).exists():
            return candidate
    return root
