"""Zero-shot classification with prompt ensembles (CLIP / GLoRIA style), scored within each modality.

Each class's prompts (phrases x templates) are embedded, L2-normalised, averaged and re-normalised;
an image is assigned the most cosine-similar class of its own modality. Metrics come from
scikit-learn: accuracy, balanced accuracy and one-vs-rest macro AUC (over the classes present).
"""
from __future__ import annotations

import json
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .embed import Embeddings


def load_prompts(path: str | Path | None = None) -> dict:
    """A prompts file ({"templates": [...], "classes": {modality: {class: [phrases]}}}); default: MedSynth's."""
    text = Path(path).read_text() if path else (resources.files("medmoe") / "data" / "medsynth_prompts.json").read_text()
    prompts = json.loads(text)
    if not isinstance(prompts.get("classes"), dict):
        raise ValueError(f"{path}: a prompts file needs a 'classes' object: {{modality: {{class: [phrases]}}}}")
    return prompts


@torch.no_grad()
def class_embeddings(model, phrases: dict[str, list[str]], templates: list[str]) -> torch.Tensor:
    """[C, D]: the normalised mean of each class's normalised prompt embeddings."""
    out = []
    for class_phrases in phrases.values():
        prompts = [t.format(p) for p in class_phrases for t in templates]
        emb = F.normalize(model.encode_text(prompts).global_emb, dim=1).mean(0)
        out.append(F.normalize(emb, dim=0))
    return torch.stack(out)


def classification_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict:
    """accuracy, balanced accuracy and macro one-vs-rest AUC of ``scores`` [n, C] against labels [n]."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    pred = scores.argmax(1)
    aucs = [roc_auc_score(y_true == c, scores[:, c]) for c in range(scores.shape[1])
            if 0 < (y_true == c).sum() < len(y_true)]
    return {"accuracy": float(accuracy_score(y_true, pred)), "balanced_accuracy": _balanced_accuracy(y_true, pred),
            "macro_auc": float(np.mean(aucs)) if aucs else float("nan"), "n": int(len(y_true))}


def _balanced_accuracy(y_true, y_pred) -> float:
    """scikit-learn's, without its warning for predicted classes absent from a small split."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))


def zeroshot_scores(model, emb: Embeddings, prompts: dict) -> dict:
    templates = prompts.get("templates") or ["{}"]
    per_modality, truth, predicted = {}, [], []
    for modality, phrases in prompts["classes"].items():
        names = list(phrases)
        rows = [i for i, r in enumerate(emb.rows) if r.modality == modality and r.labels and r.labels[0] in names]
        if not rows:
            continue
        classes = class_embeddings(model, phrases, templates)
        sim = (F.normalize(emb.image[rows], dim=1) @ classes.T).numpy()
        y = np.array([names.index(emb.rows[i].labels[0]) for i in rows])
        per_modality[modality] = classification_metrics(y, sim)
        truth += [f"{modality}:{names[k]}" for k in y]
        predicted += [f"{modality}:{names[k]}" for k in sim.argmax(1)]
    if not truth:
        return {"n": 0, "per_modality": {}}
    from sklearn.metrics import accuracy_score

    return {"accuracy": float(accuracy_score(truth, predicted)),
            "balanced_accuracy": _balanced_accuracy(truth, predicted),
            "macro_auc": float(np.nanmean([m["macro_auc"] for m in per_modality.values()])),
            "n": len(truth), "per_modality": per_modality}
