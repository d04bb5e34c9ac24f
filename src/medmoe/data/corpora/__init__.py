"""Pretraining corpora read exactly as their publishers ship them, one module per source.

Each module has ``LAYOUT`` (the expected files, for ``--help`` and errors) and
``read(root, seed) -> Collection``; :func:`prepare` writes the manifest (``image``, ``report``,
``modality`` where the source states it, ``split``, ``dataset``) and returns its summary, with the
count of each kind of skipped row (missing image, empty report).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ...errors import DataError

CORPORA = {"roco": "roco", "pmc-oa": "pmc_oa", "iu-xray": "iu_xray", "mimic-cxr": "mimic_cxr", "unimed": "unimed"}


def corpus_module(name: str):
    return importlib.import_module(f"{__name__}.{CORPORA[name]}")


def layouts() -> dict[str, str]:
    """Corpus name -> its expected layout under --root."""
    return {name: corpus_module(name).LAYOUT for name in CORPORA}


def prepare(name: str, root: str | Path, out: str | Path, seed: int = 0) -> dict:
    from .common import write_manifest

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{name}: --root {root} is not a folder")
    return write_manifest(corpus_module(name).read(root, seed), out)
