"""CT organ slices of MediMeTA (Woerner et al. 2024; Zenodo record 7884735): ``organs_axial``,
``organs_coronal`` and ``organs_sagittal``, the CT tasks UniMed-CLIP evaluates (LiTS organ crops,
11 classes from heart to right femoral head).

Published layout of each dataset folder: ``info.yaml`` (``tasks``: ``task_name`` and ``labels``
{index: class name}), ``images/NNNNNN.tiff`` (224 x 224), ``task_labels/<task_name>.npy`` (the class
index of every image, in image order) and ``splits/{train,val,test}.txt`` (one ``images/NNNNNN.tiff``
per line). MediMeTA's own splits are used; ``--list`` is not accepted.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from .common import Adapter, dataset_root, require

SPLITS = ("train", "val", "test")
LAYOUT = ("MediMeTA's {folder}/ as published: info.yaml, images/NNNNNN.tiff, task_labels/<task>.npy and "
          "splits/{{train,val,test}}.txt; --root is {folder} or the folder holding it")


def _task(name: str, info_path: Path) -> tuple[str, dict[int, str]]:
    import yaml

    info = yaml.safe_load(info_path.read_text(encoding="utf-8")) or {}
    tasks = info.get("tasks") or []
    if not tasks or "task_name" not in tasks[0] or "labels" not in tasks[0]:
        raise DataError(f"{name}: {info_path} has no task with task_name and labels")
    labels = tasks[0]["labels"]
    labels = dict(enumerate(labels)) if isinstance(labels, list) else {int(k): str(v) for k, v in labels.items()}
    return tasks[0]["task_name"], labels


def read(root: Path, out_dir: Path, seed: int, list_file: Path | None, folder: str):
    name, layout = f"medimeta-ct-{folder.split('_')[1]}", LAYOUT.format(folder=folder)
    if list_file is not None:
        raise ConfigError(f"{name}: --list is not accepted (MediMeTA publishes its splits)")
    base = dataset_root(root, "info.yaml", (folder,))
    task, labels = _task(name, require(name, base / "info.yaml", layout))
    targets = np.load(require(name, base / "task_labels" / f"{task}.npy", layout), allow_pickle=False).reshape(-1)
    rows = []
    for split in SPLITS:
        for line in require(name, base / "splits" / f"{split}.txt", layout).read_text().split():
            index = int(Path(line).stem)
            if not 0 <= index < len(targets) or int(targets[index]) not in labels:
                raise DataError(f"{name}: {line} of splits/{split}.txt has no label in task_labels/{task}.npy")
            image = require(name, base / "images" / f"{index:06d}.tiff", layout)
            rows.append({"image": image, "labels": [labels[int(targets[index])]], "patient": f"{index:06d}",
                         "split": split})
    return rows, []


def adapter(folder: str) -> Adapter:
    """``organs_axial`` -> the ``medimeta-ct-axial`` adapter."""
    plane = folder.split("_")[1]
    return Adapter(f"medimeta-ct-{plane}", "ct", None, LAYOUT.format(folder=folder),
                   functools.partial(read, folder=folder), "medimeta-ct")
