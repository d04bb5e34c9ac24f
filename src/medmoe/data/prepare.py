"""``medmoe data prepare``: the one entry point that turns a dataset, as its publisher ships it, into
a manifest. Each family of datasets is a registry module exposing ``layouts() -> {name: layout}``
and ``prepare(name, root, out, seed, **options) -> summary``; the pretraining corpora
(``medmoe.data.corpora``) are one. A benchmark registry joins by being added to ``REGISTRIES``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import ConfigError

REGISTRIES = ("medmoe.data.corpora", "medmoe.data.benchmarks")


def _registry(name: str):
    for module in map(importlib.import_module, REGISTRIES):
        if name in module.layouts():
            return module
    raise ConfigError(f"unknown dataset {name!r} (known: {', '.join(dataset_layouts())})")


def dataset_layouts() -> dict[str, str]:
    """Every dataset name -> the layout expected under --root."""
    return {name: layout for module in map(importlib.import_module, REGISTRIES) for name, layout in module.layouts().items()}


def prepare(name: str, root: str | Path, out: str | Path, seed: int = 0, **options) -> dict:
    """Write the manifest of dataset ``name`` read from ``root`` to ``out``; return its summary."""
    return _registry(name).prepare(name, root, out, seed=seed, **options)
