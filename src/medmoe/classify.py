"""Classification as a wrapper around a trained model: zero-shot from prompts (MedCLIP's
``PromptClassifier``) or from a fine-tuned head (``HeadClassifier``, ``medmoe finetune``).

    model = medmoe.load("runs/demo/medmoe")            # model folder, training run or Hub id "org/name"
    classifier = PromptClassifier(model, ["pneumonia", "normal"])   # the prompts are embedded once
    result = classifier(["chest.dcm"])                  # or classify(model, ["chest.dcm"], classes)
    result.probabilities                                # [B, C], each row sums to 1
    result.expert, result.modalities                    # the image router's expert and its modalities

    tuned = medmoe.load("runs/finetuned")               # a model folder with a head (config head_classes)
    classify(tuned, ["chest.dcm"])                      # no classes: the head's probabilities (source "head")

Zero-shot probabilities are a softmax over the classes of the zero-shot scores with the evaluation's
default scoring (``medmoe.eval.zeroshot``); a head's are its softmax, or one sigmoid per class for a
multi-label head (rows then need not sum to 1). The image router picks the expert, as there is no
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
    return transform(transform.load(image, reduced=True) if isinstance(image, (str, os.PathLike)) else image)


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
    source: str = "prompts"  # where the probabilities come from: "prompts" (zero-shot) or "head" (fine-tuned)
    multi_label: bool = False  # one sigmoid per class (a multi-label head): each probability on its own

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


class _Classifier:
    """What both classifiers share: images in (``__call__``), files in batches (``files``)."""

    model = None

    def _batch(self, images) -> torch.Tensor:
        """``images`` as one model-input batch on the model's device."""
        if isinstance(images, (str, os.PathLike, np.ndarray)):
            images = [images]
        if isinstance(images, torch.Tensor):
            batch = images[None] if images.ndim == 3 else images
        else:
            batch = torch.stack([model_input(self.model, image) for image in images])
        return batch.to(next(self.model.parameters()).device)

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
                records[i]["source"] = result.source
        return records


class PromptClassifier(_Classifier):
    """Zero-shot probabilities of ``classes`` (names, or {name: [phrases]}), whose prompts (each phrase
    in each of ``templates``) are embedded once, for any number of images."""

    source, multi_label = "prompts", False

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

        encoded = self.model.encode_image(self._batch(images))
        probabilities = class_probabilities(self.model, encoded, self.bank, self.scoring, self.ensemble)
        return Classification(self.classes, probabilities.float().cpu(), *routing(self.model, encoded))


class HeadClassifier(_Classifier):
    """The probabilities of a fine-tuned model's own head (``config.head_classes``, ``medmoe finetune``):
    a softmax over its classes, or one sigmoid per class when it is multi-label."""

    source = "head"

    def __init__(self, model):
        if getattr(model, "head", None) is None:
            raise ConfigError("this model has no trained head: give class names for zero-shot classification, or "
                              "train a head with `medmoe finetune`")
        self.model, self.classes = model.eval(), list(model.config.head_classes)
        self.multi_label = bool(model.config.head_multi_label)

    @torch.no_grad()
    def __call__(self, images) -> Classification:
        """``images`` as ``PromptClassifier`` takes them."""
        encoded = self.model.encode_image(self._batch(images))
        probabilities = self.model.head_probabilities(encoded)
        return Classification(self.classes, probabilities.cpu(), *routing(self.model, encoded), source="head",
                              multi_label=self.multi_label)


def has_head(model) -> bool:
    """Whether ``model`` carries a fine-tuned classification head."""
    return getattr(model, "head", None) is not None


def classifier(model, classes=None, templates: list[str] | None = None) -> _Classifier:
    """The head's classifier when ``model`` has a head and no ``classes`` are given, else zero-shot from the
    prompts of ``classes`` (a ConfigError when there are neither)."""
    if classes is None or (not isinstance(classes, dict) and len(classes) == 0):
        if not has_head(model):
            raise ConfigError("give class names (zero-shot from prompts): this model has no trained head "
                              "(`medmoe finetune` trains one)")
        return HeadClassifier(model)
    return PromptClassifier(model, classes, templates)


def classify(model, images, classes=None, templates: list[str] | None = None) -> Classification:
    """Classify ``images``: with ``classes``, zero-shot from their prompts (``PromptClassifier``); without,
    by the model's fine-tuned head (``HeadClassifier``)."""
    return classifier(model, classes, templates)(images)


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
