"""MRNet knee MRI (Bien et al. 2018): ACL tear and meniscal tear, one 2-D slice per exam.

Layout: ``MRNet-v1.0/{train,valid}/{axial,coronal,sagittal}/NNNN.npy`` (uint8 [slices, 256, 256]) and
``{train,valid}-{acl,meniscus}.csv`` (no header: ``0000,0``). Plane and slice are options: by default
the sagittal plane (the plane of RadImageNet's ACL and meniscus slices that UniMed-CLIP evaluates)
and its middle slice. The chosen slice is written as an 8-bit PNG (exact: the volumes are uint8) to
``images/mrnet/<exam>_<plane>_<slice>.png`` beside the manifest, so every reader of a manifest
(training, shards, evaluation) sees a plain image; rows keep ``volume`` and ``slice``. Splits: MRNet's
valid set is the test split; its train set is split train/val by exam, seeded and stratified.
``--list`` takes a fold's test CSV of RadImageNet/UniMed-CLIP (``images/<exam>_<plane>_<slice>.000000.png``
with yes/no or p/n): those slices are the test split, the other exams train/val.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from ..io import load_image
from ..tables import read_cells
from .common import (VAL_FRACTION, Adapter, apply_test_list, dataset_root, list_entries, patient_split, require,
                     save_png)

PLANES = ("axial", "coronal", "sagittal")
DEFAULT_PLANE = "sagittal"
CLASSES = {"acl": ("normal", "ACL tear"), "meniscus": ("normal", "meniscal tear")}
LISTED = re.compile(r"(\d+)_(axial|coronal|sagittal)_(\d+)(?:\.0+)?\.png$")
LAYOUT = ("MRNet-v1.0/{train,valid}/{axial,coronal,sagittal}/NNNN.npy and {train,valid}-{acl,meniscus}.csv "
          "(no header: 0000,0); --root is MRNet-v1.0 or the folder holding it")


def _slice_png(volume: Path, index: int | None, out_dir: Path) -> tuple[Path, int]:
    n = np.load(volume, mmap_mode="r").shape[0]
    index = n // 2 if index is None else index
    if not 0 <= index < n:
        raise ConfigError(f"slice {index} is outside the {n} slices of {volume}")
    target = out_dir / "images" / "mrnet" / f"{volume.stem}_{volume.parent.name}_{index}.png"
    if not target.exists():
        from PIL import Image

        save_png(Image.fromarray(np.round(load_image(volume, index) * 255).astype(np.uint8)), target)
    return target, index


def _row(name, base: Path, part: str, exam: str, plane: str, index, cls: str, out_dir: Path) -> dict:
    volume = require(name, base / part / plane / f"{exam}.npy", LAYOUT)
    image, index = _slice_png(volume, index, out_dir)
    return {"image": image, "labels": [cls], "patient": exam, "volume": volume, "slice": index, "plane": plane}


def read(root: Path, out_dir: Path, seed: int, list_file: Path | None, task: str,
         plane: str = DEFAULT_PLANE, slice_index: int | None = None):
    name, classes = f"mrnet-{task}", CLASSES[task]
    if plane not in PLANES:
        raise ConfigError(f"{name}: --plane must be one of {', '.join(PLANES)} (got {plane!r})")
    base = dataset_root(root, f"train-{task}.csv", ("MRNet-v1.0",))
    rows, exams = [], {}
    for part in ("train", "valid"):
        for n, cells in enumerate(read_cells(require(name, base / f"{part}-{task}.csv", LAYOUT)), 1):
            if len(cells) < 2 or cells[1].strip() not in ("0", "1"):
                raise DataError(f"{name}: {base / f'{part}-{task}.csv'} row {n}: expected 'NNNN,0' or 'NNNN,1'")
            exam = cells[0].strip().zfill(4)
            exams[exam] = part
            rows.append(_row(name, base, part, exam, plane, slice_index, classes[int(cells[1])], out_dir) | {"source_split": part})
    if list_file is not None:
        listed = []
        label_map = {"yes": classes[1], "p": classes[1], "1": classes[1], "no": classes[0], "n": classes[0], "0": classes[0]}
        for path, cls in list_entries(name, list_file, label_map):
            found = LISTED.search(path)
            if found is None or found.group(1).zfill(4) not in exams:
                raise DataError(f"{name}: {list_file}: {path} is not <exam>_<plane>_<slice>.png of an MRNet exam")
            exam = found.group(1).zfill(4)
            listed.append(_row(name, base, exams[exam], exam, found.group(2), int(found.group(3)), cls, out_dir))
        return apply_test_list(name, rows, listed, seed)
    train = [r for r in rows if r["source_split"] == "train"]
    patient_split(train, seed, name, {"train": 1 - VAL_FRACTION, "val": VAL_FRACTION})
    for row in rows:
        if row["source_split"] == "valid":
            row["split"] = "test"
    return rows, []


def adapter(task: str) -> Adapter:
    return Adapter(f"mrnet-{task}", "mri", CLASSES[task], LAYOUT, functools.partial(read, task=task),
                   f"mrnet-{task}", options=("plane", "slice_index"))
