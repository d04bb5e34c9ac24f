"""CT organ slices of MediMeTA (Woerner et al. 2024; Zenodo record 7884735): ``organs_axial``,
``organs_coronal`` and ``organs_sagittal``, the CT tasks UniMed-CLIP evaluates (LiTS organ crops,
11 classes from heart to right femoral head).

Published layout of each dataset folder: ``info.yaml`` (``tasks``: ``task_name`` and ``labels``
{index: class name}), ``images/NNNNNN.tiff`` (224 x 224), ``task_labels/<task_name>.npy`` (the class
index of every image, in image order) and ``splits/{train,val,test}.txt`` (one ``images/NNNNNN.tiff``
per line). MediMeTA's own splits are used; ``--list`` is not accepted. A malformed ``info.yaml``,
labels file or split line is a DataError naming the file (and line).
"""
from __future__ import annotations

import functools
from pathlib import Path, PurePosixPath

import numpy as np

from ...errors import ConfigError, DataError
from .common import Adapter, dataset_root, require

SPLITS = ("train", "val", "test")
LAYOUT = ("MediMeTA's {folder}/ as published: info.yaml, images/NNNNNN.tiff, task_labels/<task>.npy and "
          "splits/{{train,val,test}}.txt; --root is {folder} or the folder holding it")


def _task(name: str, info_path: Path) -> tuple[str, dict[int, str]]:
    """The first task of ``info.yaml``: its name and {class index: class name}."""
    import yaml

    try:
        info = yaml.safe_load(info_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: {info_path}: not valid YAML ({' '.join(str(exc).split())})") from None
    tasks = info.get("tasks") if isinstance(info, dict) else None
    task = tasks[0] if isinstance(tasks, list) and tasks and isinstance(tasks[0], dict) else {}
    labels = task.get("labels")
    if "task_name" not in task or not labels or not isinstance(labels, (dict, list)):
        raise DataError(f"{name}: {info_path} has no task with task_name and labels")
    try:
        labels = dict(enumerate(labels)) if isinstance(labels, list) else {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise DataError(f"{name}: {info_path}: the labels of task {task['task_name']!r} are not "
                        "{class index: class name}") from None
    return str(task["task_name"]), labels


def _targets(name: str, path: Path) -> np.ndarray:
    """The class index of every image, in image order (``task_labels/<task>.npy``)."""
    try:
        targets = np.load(path, allow_pickle=False).reshape(-1)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{name}: {path}: not a NumPy .npy array ({' '.join(str(exc).split())})") from None
    if not np.issubdtype(targets.dtype, np.number):
        raise DataError(f"{name}: {path}: class indices expected, found an array of {targets.dtype}")
    return targets


def read(root: Path, out_dir: Path, seed: int, list_file: Path | None, folder: str):
    name, layout = f"medimeta-ct-{folder.split('_')[1]}", LAYOUT.format(folder=folder)
    if list_file is not None:
        raise ConfigError(f"{name}: --list is not accepted (MediMeTA publishes its splits)")
    base = dataset_root(root, "info.yaml", (folder,))
    task, labels = _task(name, require(name, base / "info.yaml", layout))
    targets = _targets(name, require(name, base / "task_labels" / f"{task}.npy", layout))
    rows = []
    for split in SPLITS:
        split_file = require(name, base / "splits" / f"{split}.txt", layout)
        for n, line in enumerate(split_file.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not (line := line.strip()):
                continue
            where = f"{name}: {split_file} line {n}: {line!r}"
            if not PurePosixPath(line).stem.isdigit():
                raise DataError(f"{where} is not images/NNNNNN.tiff")
            index = int(PurePosixPath(line).stem)
            if not 0 <= index < len(targets) or int(targets[index]) not in labels:
                raise DataError(f"{where} has no label in task_labels/{task}.npy")
            image = require(name, base / "images" / f"{index:06d}.tiff", layout)
            rows.append({"image": image, "labels": [labels[int(targets[index])]], "patient": f"{index:06d}",
                         "split": split})
    return rows, []


def adapter(folder: str) -> Adapter:
    """``organs_axial`` -> the ``medimeta-ct-axial`` adapter."""
    plane = folder.split("_")[1]
    return Adapter(f"medimeta-ct-{plane}", "ct", None, LAYOUT.format(folder=folder),
                   functools.partial(read, folder=folder), "medimeta-ct")
