"""Use a trained model: ``medmoe.load`` and zero-shot classification of image files.

    model = medmoe.load("runs/demo/medmoe")      # model folder, training run or Hub id "org/name"
    result = model.classify(["chest.dcm"], ["pneumonia", "normal"])
    result.probabilities                          # [B, C], each row sums to 1
    result.expert, result.modalities              # the image router's expert and its modalities

The probabilities are a softmax over the classes of the zero-shot scores with the evaluation's
default scoring (``medmoe.eval.zeroshot.class_probabilities``); the image router picks the expert,
as there is no report at inference.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.transforms import ImageTransform
from .errors import ConfigError, ImageLoadError

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def load(name_or_path: str | os.PathLike, map_location: str = "cpu"):
    """A model folder, a training run (its newest checkpoint) or a Hugging Face Hub id ``org/name``
    (downloaded once into the Hub cache, then read from there; offline with ``HF_HUB_OFFLINE=1``)."""
    from .model.medmoe import MedMoE

    path = Path(name_or_path)
    if not path.exists() and HUB_ID.match(str(name_or_path)):
        from .hub import download

        path = download(str(name_or_path))
    return MedMoE.from_pretrained(path, map_location=map_location)


def model_input(model, image) -> torch.Tensor:
    """One image as the model takes it, [3, S, S]: a file (DICOM, NIfTI, PNG, JPEG, ...), an image
    array as ``load_image`` returns it, or an already prepared tensor [3, S, S]. Files are read and
    normalised as the model's configuration says (``ImageTransform``), as in training and evaluation."""
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        return image
    transform = ImageTransform.of(model.config)
    return transform(transform.load(image) if isinstance(image, (str, os.PathLike)) else image)


def expert_modalities(model) -> dict[int, list[str]]:
    """The modalities assigned to each expert (``MedMoE.expert_targets``: modality index mod K)."""
    names = model.config.modalities
    targets = model.expert_targets(torch.arange(len(names))).tolist()
    return {k: [m for m, t in zip(names, targets) if t == k] for k in range(model.config.num_experts)}


@dataclass
class Classification:
    classes: list[str]
    probabilities: torch.Tensor  # [B, C]
    expert: torch.Tensor | None  # the image router's expert [B]; None without experts
    router_probabilities: torch.Tensor | None  # [B, K]
    modalities: list[list[str]] | None  # per image, the modalities assigned to its expert

    def top(self) -> list[str]:
        """The most probable class of each image."""
        return [self.classes[i] for i in self.probabilities.argmax(1).tolist()]


def class_names(classes) -> list[str]:
    """The names of ``classes`` (a list of names or {name: [phrases]}), checked: at least two, and
    each mapping value a non-empty list of phrases."""
    names = [str(c) for c in classes]
    if len(set(names)) < 2:
        raise ConfigError(f"need at least 2 different classes to choose between, got {names}")
    bad = [n for n, p in classes.items() if isinstance(p, str) or not p] if isinstance(classes, dict) else []
    if bad:
        raise ConfigError(f"class {bad[0]!r}: its phrases must be a non-empty list of strings")
    return names


@torch.no_grad()
def classify(model, images, classes, templates: list[str] | None = None) -> Classification:
    """Zero-shot probabilities of ``classes`` for ``images``: a tensor [B, 3, H, W] or [3, H, W]
    (model input), or a list of files / grey arrays / [3, H, W] tensors."""
    from .eval.zeroshot import class_probabilities

    model.eval()
    names = class_names(classes)
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        images = [images]
    if isinstance(images, torch.Tensor):
        batch = images[None] if images.ndim == 3 else images
    else:
        batch = torch.stack([model_input(model, image) for image in images])
    encoded = model.encode_image(batch.to(next(model.parameters()).device))
    probabilities = class_probabilities(model, encoded, classes, templates).float().cpu()
    return Classification(names, probabilities, *routing(model, encoded))


def routing(model, encoded) -> tuple:
    """(expert [B], router probabilities [B, K], modalities of each expert) of ``encode_image``'s
    output; Nones for a model without experts."""
    if encoded.router_logits is None:
        return None, None, None
    assigned = expert_modalities(model)
    expert = encoded.expert.cpu()
    return expert, encoded.router_logits.float().softmax(1).cpu(), [assigned[k] for k in expert.tolist()]


def classify_files(model, paths: list, classes, templates: list[str] | None = None, batch_size: int = 16) -> list[dict]:
    """One record per file, in order: {"image", "probabilities": {class: p}, "expert", "modality"}
    (modality: the names assigned to the routed expert, joined by "/"), or {"image", "error"} for a
    file that cannot be read; the readable ones are classified in batches."""
    records, ready = [], []
    for path in paths:
        try:
            ready.append((len(records), model_input(model, path)))
            records.append({"image": str(path)})
        except ImageLoadError as exc:
            records.append({"image": str(path), "error": str(exc)})
    for start in range(0, len(ready), batch_size):
        chunk = ready[start : start + batch_size]
        result = classify(model, torch.stack([x for _, x in chunk]), classes, templates)
        for b, (i, _) in enumerate(chunk):
            records[i]["probabilities"] = dict(zip(result.classes, result.probabilities[b].tolist()))
            records[i]["expert"] = None if result.expert is None else int(result.expert[b])
            records[i]["modality"] = None if result.modalities is None else "/".join(result.modalities[b])
    return records


def read_prompts(path: str | os.PathLike, names: list[str] | None = None) -> tuple[dict[str, list[str]], list[str] | None]:
    """({name: [phrases]}, templates or None) from a JSON file {"classes": {name: [phrases]},
    "templates": ["a scan showing {}", ...]}; with ``names``, only those classes (a name the file
    does not list is its own phrase)."""
    import json

    try:
        prompts = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the prompts file ({exc})") from exc
    classes = prompts.get("classes") if isinstance(prompts, dict) else None
    if not isinstance(classes, dict) or not all(isinstance(v, list) for v in classes.values()):
        raise ConfigError(f'{path}: a prompts file needs "classes": {{name: [phrases]}}')
    if names:
        classes = {n: classes.get(n, [n]) for n in names}
    return classes, prompts.get("templates")
