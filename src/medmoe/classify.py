"""Zero-shot classification as a wrapper around a trained model (MedCLIP's ``PromptClassifier``).

    model = medmoe.load("runs/demo/medmoe")            # model folder, training run or Hub id "org/name"
    classifier = PromptClassifier(model, ["pneumonia", "normal"])   # the prompts are embedded once
    result = classifier(["chest.dcm"])                  # or classify(model, ["chest.dcm"], classes)
    result.probabilities                                # [B, C], each row sums to 1
    result.expert, result.modalities                    # the image router's expert and its modalities

The probabilities are a softmax over the classes of the zero-shot scores with the evaluation's
default scoring (``medmoe.eval.zeroshot``); the image router picks the expert, as there is no
report at inference.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.transforms import ImageTransform
from .errors import ConfigError, ImageLoadError


def model_input(model, image) -> torch.Tensor:
    """One image as the model takes it, [3, S, S]: a file (DICOM, NIfTI, PNG, JPEG, ...), an image
    array as ``load_image`` returns it, or an already prepared tensor [3, S, S]. Files are read and
    normalised as the model's configuration says (``ImageTransform``), as in training and evaluation."""
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        return image
    transform = ImageTransform.of(model.config)
    return transform(transform.load(image) if isinstance(image, (str, os.PathLike)) else image)


def expert_modalities(model) -> dict[int, list[str]]:
    """The modalities assigned to each expert (the gate's modality table)."""
    return model.gate.expert_modalities()


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


class PromptClassifier:
    """Zero-shot probabilities of ``classes`` (names, or {name: [phrases]}), whose prompts (each phrase
    in each of ``templates``) are embedded once, for any number of images."""

    def __init__(self, model, classes, templates: list[str] | None = None, scoring: str | None = None,
                 ensemble: str | None = None):
        from .eval.zeroshot import class_prompts

        self.model, self.classes = model.eval(), class_names(classes)
        self.bank = class_prompts(model, classes, templates)
        self.scoring, self.ensemble = scoring, ensemble

    @torch.no_grad()
    def __call__(self, images) -> Classification:
        """``images``: a tensor [B, 3, H, W] or [3, H, W] (model input), or a list of files / grey
        arrays / [3, H, W] tensors."""
        from .eval.zeroshot import class_probabilities

        if isinstance(images, (str, os.PathLike, np.ndarray)):
            images = [images]
        if isinstance(images, torch.Tensor):
            batch = images[None] if images.ndim == 3 else images
        else:
            batch = torch.stack([model_input(self.model, image) for image in images])
        encoded = self.model.encode_image(batch.to(next(self.model.parameters()).device))
        probabilities = class_probabilities(self.model, encoded, self.bank, self.scoring, self.ensemble)
        return Classification(self.classes, probabilities.float().cpu(), *routing(self.model, encoded))

    def files(self, paths: list, batch_size: int = 16) -> list[dict]:
        """One record per file, in order: {"image", "probabilities": {class: p}, "expert", "modality"}
        (modality: the names assigned to the routed expert, joined by "/"), or {"image", "error"} for a
        file that cannot be read; the readable ones are classified in batches."""
        records, ready = [], []
        for path in paths:
            try:
                ready.append((len(records), model_input(self.model, path)))
                records.append({"image": str(path)})
            except ImageLoadError as exc:
                records.append({"image": str(path), "error": str(exc)})
        for start in range(0, len(ready), batch_size):
            chunk = ready[start : start + batch_size]
            result = self(torch.stack([x for _, x in chunk]))
            for b, (i, _) in enumerate(chunk):
                records[i]["probabilities"] = dict(zip(result.classes, result.probabilities[b].tolist()))
                records[i]["expert"] = None if result.expert is None else int(result.expert[b])
                records[i]["modality"] = None if result.modalities is None else "/".join(result.modalities[b])
        return records


def classify(model, images, classes, templates: list[str] | None = None) -> Classification:
    """``PromptClassifier(model, classes, templates)(images)``, for one call."""
    return PromptClassifier(model, classes, templates)(images)


def routing(model, encoded) -> tuple:
    """(expert [B], router probabilities [B, K], modalities of each expert) of ``encode_image``'s
    output; Nones for a model without experts."""
    if encoded.router_logits is None:
        return None, None, None
    assigned = expert_modalities(model)
    expert = encoded.expert.cpu()
    return expert, encoded.router_logits.float().softmax(1).cpu(), [assigned[k] for k in expert.tolist()]


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
