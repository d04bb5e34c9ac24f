"""One registry of named settings, read once (timm's registry, open_clip's model configs).

Three kinds, each a folder of JSON files in the package:

- ``presets``: model architectures (``MedMoEConfig`` fields): tiny, small, paper;
- ``variants``: baselines and ablations as overrides on any preset: medmoe, static, ...;
- ``recipes``: training settings, ``{"train": TrainArgs fields, "config": MedMoEConfig fields}``.

A ``_doc`` key describes an entry. ``register(kind, name, data)`` adds an entry of one's own
(open_clip's ``add_model_config``); every lookup returns a copy, so callers may change it.
"""
from __future__ import annotations

import copy
import functools
import json
from importlib import resources

from .errors import ConfigError

KINDS = ("presets", "variants", "recipes")
_registered: dict[str, dict[str, dict]] = {kind: {} for kind in KINDS}


@functools.cache
def _shipped(kind: str) -> dict[str, dict]:
    folder = resources.files("medmoe") / kind
    return {p.name[: -len(".json")]: json.loads(p.read_text(encoding="utf-8"))
            for p in folder.iterdir() if p.name.endswith(".json")}


def _entries(kind: str) -> dict[str, dict]:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    return {**_shipped(kind), **_registered[kind]}


def names(kind: str) -> list[str]:
    """The names of every entry of ``kind``, sorted."""
    return sorted(_entries(kind))


def get(kind: str, name: str) -> dict:
    """A copy of entry ``name`` of ``kind``; a ConfigError naming the choices if there is none."""
    entries = _entries(kind)
    if name not in entries:
        raise ConfigError(f"unknown {kind[:-1]} {name!r}; choose from {', '.join(sorted(entries))}")
    return copy.deepcopy(entries[name])


def register(kind: str, name: str, data: dict) -> None:
    """Add (or replace) entry ``name`` of ``kind`` for this process."""
    _entries(kind)
    _registered[kind][name] = copy.deepcopy(data)
