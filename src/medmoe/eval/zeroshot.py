"""Zero-shot classification with prompt ensembles, scored within each dataset, else modality (docs/design.md §7).

A class is scored by its prompts (phrases x templates), in one of three ways (``scoring``):

- ``global``: cosine of the image embedding v_g and the prompts' report embeddings t_g (CLIP);
- ``local``: GLoRIA's local similarity over the routed expert's local map: the word attention of the
  local loss (Sec. 4.4), then temp2 x the best word's cosine (``losses.local_similarity(agg="max")``,
  GLoRIA's ``get_local_similarities``), so the routed pathway reaches zero-shot;
- ``both``: (global + local) / 2 (GLoRIA's ``similarity_type="both"``).

The prompts of a class are combined by ``ensemble``: ``mean`` (CLIP: the cosine with the normalised
mean of the normalised prompt embeddings; for ``local``, the mean over prompts) or ``max`` (GLoRIA:
the best prompt). Images are routed by the image router (no report at inference). Evaluation then
normalises each class's scores across the evaluated images (z-score, as GLoRIA's
``zero_shot_classification``) before the argmax; ``class_probabilities`` (one image or many) is a
softmax over the classes of ``temp3`` x the raw scores. Metrics come from scikit-learn.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import local_similarity
from . import DEFAULT_ENSEMBLE, DEFAULT_SCORING, ENSEMBLES, SCORINGS

PROMPT_BATCH = 64  # prompts embedded per encode_text call


def load_prompts(path: str | Path | None = None) -> dict:
    """A prompts file ({"templates": [...], "classes": {modality: {class: [phrases]}}}); default: MedSynth's."""
    text = Path(path).read_text() if path else (resources.files("medmoe") / "data" / "medsynth_prompts.json").read_text()
    prompts = json.loads(text)
    if not isinstance(prompts.get("classes"), dict):
        raise ValueError(f"{path}: a prompts file needs a 'classes' object: {{modality: {{class: [phrases]}}}}")
    return prompts


@dataclass
class PromptBank:
    """Every prompt of a set of classes, embedded once."""

    classes: list[tuple[str, str]]  # (group, class name) of each class
    prompt_class: torch.Tensor  # [P] index into ``classes`` of each prompt
    global_emb: torch.Tensor  # t_g [P, D]
    words: torch.Tensor  # [P, N, D]
    lengths: torch.Tensor  # [P]

    def group(self, name: str) -> list[int]:
        """Indices of the classes of group ``name``."""
        return [c for c, (g, _) in enumerate(self.classes) if g == name]


@torch.no_grad()
def embed_prompts(model, groups: dict[str, dict[str, list[str]]], templates: list[str] | None = None) -> PromptBank:
    """``groups``: {group: {class: [phrases]}}; each phrase goes into each template ("{}" by default)."""
    templates = templates or ["{}"]
    classes, prompts, owner = [], [], []
    for group, phrases in groups.items():
        for name, class_phrases in phrases.items():
            owner += [len(classes)] * (len(class_phrases) * len(templates))
            prompts += [t.format(p) for p in class_phrases for t in templates]
            classes.append((group, name))
    outs = [model.encode_text(prompts[i : i + PROMPT_BATCH]) for i in range(0, len(prompts), PROMPT_BATCH)]
    n = max(o.words.shape[1] for o in outs)
    words = torch.cat([F.pad(o.words, (0, 0, 0, n - o.words.shape[1])) for o in outs])
    return PromptBank(classes, torch.tensor(owner), torch.cat([o.global_emb for o in outs]), words,
                      torch.cat([o.lengths for o in outs]))


def _per_class(sim: torch.Tensor, bank: PromptBank, ensemble: str) -> torch.Tensor:
    """Prompt scores [B, P] -> class scores [B, C]: mean or max over each class's prompts."""
    index = bank.prompt_class.to(sim.device).expand_as(sim)
    out = sim.new_zeros(sim.shape[0], len(bank.classes))
    return out.scatter_reduce(1, index, sim, reduce="amax" if ensemble == "max" else "mean", include_self=False)


def global_scores(image_emb: torch.Tensor, bank: PromptBank, ensemble: str) -> torch.Tensor:
    """Cosine scores of image embeddings [B, D]: against every prompt [B, P] (``max``), or against
    each class's normalised mean prompt embedding [B, C] (``mean``, CLIP's ensemble)."""
    v, t = F.normalize(image_emb.float(), dim=1), F.normalize(bank.global_emb.float().to(image_emb.device), dim=1)
    if ensemble == "max":
        return v @ t.T
    centroids = t.new_zeros(len(bank.classes), t.shape[1]).index_add_(0, bank.prompt_class.to(t.device), t)
    return v @ F.normalize(centroids, dim=1).T


def prompt_local_scores(model, local_map: torch.Tensor, bank: PromptBank) -> torch.Tensor:
    """[B, P] GLoRIA local similarity of each image's local map [B, D, G, G] and each prompt."""
    c = model.config
    return local_similarity(local_map, bank.words.to(local_map.device), bank.lengths, c.temp1, c.temp2, "max",
                            attention=c.attention).float()


def combine(scoring: str, ensemble: str, bank: PromptBank, image_emb: torch.Tensor,
            prompt_local: torch.Tensor | None) -> torch.Tensor:
    """Class scores [B, C] from the image embeddings and (for local/both) the prompt local scores [B, P].
    ``max`` takes each class's best prompt by its (global + local) / 2, as GLoRIA does; ``mean`` averages
    the global centroid score and the mean local score."""
    check_scoring(scoring, ensemble)
    if scoring != "global" and prompt_local is None:
        raise ValueError(f"scoring {scoring!r} needs each image's local scores: embed_rows(..., prompts=bank)")
    parts = []
    if scoring in ("global", "both"):
        parts.append(global_scores(image_emb, bank, ensemble))
    if scoring in ("local", "both"):
        local = prompt_local.to(image_emb.device)
        parts.append(local if ensemble == "max" else _per_class(local, bank, "mean"))
    combined = sum(parts) / len(parts)
    return _per_class(combined, bank, "max") if ensemble == "max" else combined


def check_scoring(scoring: str, ensemble: str) -> None:
    if scoring not in SCORINGS or ensemble not in ENSEMBLES:
        raise ValueError(f"scoring must be one of {', '.join(SCORINGS)} and ensemble one of {', '.join(ENSEMBLES)} "
                         f"(got {scoring!r}, {ensemble!r})")


def _as_phrases(classes) -> dict[str, list[str]]:
    return dict(classes) if isinstance(classes, dict) else {name: [name] for name in classes}


def class_prompts(model, classes, templates: list[str] | None = None) -> PromptBank:
    """The prompts of ``classes`` (names, or {name: [phrases]}), embedded once (one group)."""
    return embed_prompts(model, {"": _as_phrases(classes)}, templates)


@torch.no_grad()
def class_scores(model, image, bank: PromptBank, scoring: str | None = None, ensemble: str | None = None) -> torch.Tensor:
    """Raw zero-shot scores [B, C] of ``image`` (the ImageOutput of ``model.encode_image``) for the
    classes of ``bank`` (``class_prompts``); not normalised across images."""
    scoring, ensemble = scoring or DEFAULT_SCORING, ensemble or DEFAULT_ENSEMBLE
    check_scoring(scoring, ensemble)
    local = prompt_local_scores(model, image.local_map, bank) if scoring != "global" else None
    return combine(scoring, ensemble, bank, image.global_emb, local)


def class_probabilities(model, image, bank: PromptBank, scoring: str | None = None,
                        ensemble: str | None = None) -> torch.Tensor:
    """[B, C]: softmax over the classes of ``temp3`` x ``class_scores`` (Sec. 4.4's scale)."""
    return (model.config.temp3 * class_scores(model, image, bank, scoring, ensemble)).softmax(dim=1)


def normalise_across_images(scores: torch.Tensor) -> torch.Tensor:
    """Each class's scores as z-scores over the images [n, C] (GLoRIA; unchanged for one image)."""
    if scores.shape[0] < 2:
        return scores
    return (scores - scores.mean(0)) / scores.std(0).clamp(min=1e-12)


def classification_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict:
    """accuracy, balanced accuracy and macro one-vs-rest AUC of ``scores`` [n, C] against labels [n]."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    pred = scores.argmax(1)
    aucs = [roc_auc_score(y_true == c, scores[:, c]) for c in range(scores.shape[1])
            if 0 < (y_true == c).sum() < len(y_true)]
    return {"accuracy": float(accuracy_score(y_true, pred)), "balanced_accuracy": _balanced_accuracy(y_true, pred),
            "macro_auc": float(np.mean(aucs)) if aucs else float("nan"), "n": int(len(y_true))}


def _balanced_accuracy(y_true, y_pred) -> float:
    """scikit-learn's, without its warnings for a small split (predicted classes absent, one class only)."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return float(balanced_accuracy_score(y_true, y_pred))


def zeroshot_scores(emb, bank: PromptBank, scoring: str = DEFAULT_SCORING, ensemble: str = DEFAULT_ENSEMBLE) -> dict:
    """Zero-shot metrics per group and overall, from ``embed_rows(..., prompts=bank)``'s output. A
    bank group holds the classes of one dataset (``per_dataset``) or, for rows without a dataset, of one
    modality (``per_modality``); each row is scored only against the classes of its group (``Row.group``)."""
    per_group, truth, predicted = {"per_modality": {}, "per_dataset": {}}, [], []
    for group in dict.fromkeys(g for g, _ in bank.classes):
        cls = bank.group(group)
        names = [bank.classes[c][1] for c in cls]
        rows = [i for i, r in enumerate(emb.rows) if r.group == group and r.labels and r.labels[0] in names]
        if not rows:
            continue
        local = emb.prompt_local[rows] if emb.prompt_local is not None else None
        scores = combine(scoring, ensemble, bank, emb.image[rows], local)[:, cls]
        scores = normalise_across_images(scores).numpy()
        y = np.array([names.index(emb.rows[i].labels[0]) for i in rows])
        per_group["per_dataset" if emb.rows[rows[0]].dataset else "per_modality"][group] = classification_metrics(y, scores)
        truth += [f"{group}:{names[k]}" for k in y]
        predicted += [f"{group}:{names[k]}" for k in scores.argmax(1)]
    out = {"scoring": scoring, "ensemble": ensemble}
    if not per_group["per_dataset"]:
        del per_group["per_dataset"]
    if not truth:
        return out | {"n": 0, **per_group}
    from sklearn.metrics import accuracy_score

    aucs = [m["macro_auc"] for groups in per_group.values() for m in groups.values() if not np.isnan(m["macro_auc"])]
    return out | {"accuracy": float(accuracy_score(truth, predicted)),
                  "balanced_accuracy": _balanced_accuracy(truth, predicted),
                  "macro_auc": float(np.mean(aucs)) if aucs else float("nan"), "n": len(truth), **per_group}
