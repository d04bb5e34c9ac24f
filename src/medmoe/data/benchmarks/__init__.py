"""Benchmark datasets of the paper's Tables 1-2, read as their publishers distribute them.

``prepare(name, root, out, seed=0, list_file=None, **options)`` writes one JSONL manifest per dataset
(``medmoe data prepare``); ``ADAPTERS`` maps each name to its adapter (``Adapter.layout`` says what
``root`` must hold; a wrong layout is a ``DataError`` naming what is missing): ``DATASETS``, the
classification benchmarks of Tables 1-2, and MS-CXR, a grounding set. ``GROUNDING`` names the datasets
of Table G (grounding) and the text each of their rows is read with;
``load_dataset_prompts(name)`` gives a dataset's zero-shot prompts (``medmoe/data/prompts/``).

Manifest schema (one JSON object per line, read by ``medmoe.data.manifest.read_manifest``):

- ``image``: path relative to the manifest (derived images, e.g. MRNet slices, are written beside it);
- ``report``: the class name (the manifest reader needs a report; the zero-shot prompts are separate);
- ``labels``: ``[class]``, one of the adapter's classes (``Adapter.classes``; MediMeTA: its info.yaml);
- ``split``: ``train``, ``val`` or ``test``: the source's split where one exists (MRNet valid = test,
  MediMeTA's splits, a fixed test list given with ``--list``), else seeded and stratified by patient
  (70/15/15, GLoRIA's fractions), so all images of a patient share a split;
- ``modality``: ``xray``, ``ct``, ``mri`` or ``ultrasound``; ``dataset``: the dataset name;
- ``patient``: the patient (or exam, case, image) id the split is made by;
- optional: ``mask`` (lesion mask, relative path: BUSI, DDTI), ``boxes`` ([[x, y, width, height]] in
  image pixels: RSNA, MS-CXR; MS-CXR's in pixels of ``box_size`` = [width, height]), ``phrase`` (the
  phrase the boxes ground: MS-CXR, whose ``report`` is that phrase), ``finding`` (the source's finer class:
  RSNA, BUSI), ``volume``/``plane``/``slice`` and ``source_split`` (MRNet, MS-CXR).

Rows are never pooled across datasets: evaluate each manifest (or each ``dataset`` value) on its own,
with its own prompt group.
"""
from __future__ import annotations

import json
import os
import random
from collections import Counter
from importlib import resources
from pathlib import Path

from ...errors import ConfigError, DataError
from ...files import atomic_write_text
from . import busi, chexpert, medimeta, mrnet, mscxr, rsna, thyroid
from .common import Adapter

DATASETS: dict[str, Adapter] = {a.name: a for a in (
    chexpert.ADAPTER, rsna.ADAPTER, thyroid.ADAPTER, busi.ADAPTER, mrnet.adapter("acl"), mrnet.adapter("meniscus"),
    medimeta.adapter("organs_axial"), medimeta.adapter("organs_coronal"), medimeta.adapter("organs_sagittal"))}
ADAPTERS: dict[str, Adapter] = {**DATASETS, mscxr.ADAPTER.name: mscxr.ADAPTER}
# Table G: dataset -> the text its rows are read with (GLoRIA's "pneumonia" on RSNA's boxes), None: each
# row's own phrase (MS-CXR); scored on the test split's rows that carry boxes or masks
GROUNDING: dict[str, str | None] = {"rsna-pneumonia": "pneumonia", "ms-cxr": None}
FIRST_COLUMNS = ("image", "report", "labels", "split", "modality", "dataset", "patient")
# each dataset's folder under ``medmoe benchmark --root`` (MRNet's serves both tasks, MediMeTA's the three views)
FOLDERS = {"chexpert-5x200": "chexpert", "rsna-pneumonia": "rsna-pneumonia", "thyroid-us": "thyroid-us",
           "breast-us": "breast-us", "mrnet-acl": "mrnet", "mrnet-meniscus": "mrnet",
           "medimeta-ct-axial": "medimeta", "medimeta-ct-coronal": "medimeta", "medimeta-ct-sagittal": "medimeta",
           "ms-cxr": "ms-cxr"}


def adapter(name: str) -> Adapter:
    if name not in ADAPTERS:
        raise ConfigError(f"unknown dataset {name!r}; choose from {', '.join(ADAPTERS)}")
    return ADAPTERS[name]


def _record(row: dict, name: str, modality: str, folder: Path) -> dict:
    """A manifest line: paths relative to the manifest's folder, the schema's columns first; the report is
    the class name unless the adapter gives one (MS-CXR's phrase)."""
    row = {k: (Path(os.path.relpath(v, folder)).as_posix() if isinstance(v, Path) else v) for k, v in row.items()}
    row.update(report=row.get("report", row["labels"][0]), modality=modality, dataset=name)
    return {**{k: row[k] for k in FIRST_COLUMNS}, **{k: v for k, v in row.items() if k not in FIRST_COLUMNS}}


def prepare(name: str, root, out, seed: int = 0, list_file=None, **options) -> dict:
    """Write the manifest ``out`` (JSONL) of dataset ``name`` from the publisher's layout under
    ``root``; ``list_file`` is a fixed list (see each adapter), ``options`` the adapter's own
    (MRNet: ``plane``, ``slice_index``). Returns a summary: rows per split and class, and warnings
    (e.g. a CheXpert class with fewer than 200 eligible images, a DDTI case or image left out, a BUSI
    copy without masks), which ``medmoe data prepare`` prints as ``medmoe: warning: ...`` lines."""
    spec = adapter(name)
    options = {k: v for k, v in options.items() if v is not None}
    if unknown := sorted(set(options) - set(spec.options)):
        raise ConfigError(f"{name} takes no option {', '.join(unknown)}")
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{name}: --root {root} is not a folder (expected: {spec.layout})")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, warnings = spec.read(root, out.parent.resolve(), seed, Path(list_file) if list_file else None, **options)
    if not rows:
        raise DataError(f"{name}: no image found under {root} (expected: {spec.layout})")
    records = [_record(row, name, spec.modality, out.parent.resolve()) for row in rows]
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    per_class: dict[str, Counter] = {}
    for r in records:
        per_class.setdefault(r["split"], Counter())[r["labels"][0]] += 1
    return {"dataset": name, "out": str(out), "rows": len(records),
            "per_split": {s: sum(c.values()) for s, c in sorted(per_class.items())},
            "per_modality": {spec.modality: len(records)}, "skipped": {},
            "per_class": {s: dict(sorted(c.items())) for s, c in sorted(per_class.items())}, "warnings": warnings}


def layouts() -> dict[str, str]:
    """Dataset name -> its expected layout under --root (``medmoe.data.prepare`` lists every registry's)."""
    return {name: a.layout for name, a in ADAPTERS.items()}


def load_dataset_prompts(name: str, n: int | None = None, seed: int = 0) -> dict:
    """The zero-shot prompts of dataset ``name`` in the prompts format (``{"templates", "classes":
    {name: {class: [phrases]}}}``, as ``eval.zeroshot.load_prompts``), with the file's ``_source``.
    ``n``: draw n phrases per class (all when a class has fewer) with one ``random.Random(seed)``
    stream over the classes in file order, as GLoRIA's ``generate_chexpert_class_prompts``."""
    prompts = json.loads((resources.files("medmoe") / "data" / "prompts" / f"{adapter(name).prompts}.json").read_text())
    (classes,) = prompts["classes"].values()
    if n is not None:
        rng = random.Random(seed)
        classes = {c: rng.sample(p, n) if n < len(p) else p for c, p in classes.items()}
    return {**prompts, "classes": {name: classes}}
