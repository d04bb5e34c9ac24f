"""``medmoe eval TASK``: embed the evaluation split once, run the tasks, return one JSON-able dict."""
from __future__ import annotations

from pathlib import Path

from ..data.manifest import ManifestError, read_manifest
from .embed import embed_rows
from .grounding import grounding_scores
from .probe import linear_probe_scores
from .retrieval import recall_at_k
from .routing import routing_scores
from .zeroshot import load_prompts, zeroshot_scores

TASKS = ("zeroshot", "retrieval", "linear-probe", "routing", "grounding")


def retrieval_scores(emb) -> dict:
    out = {**recall_at_k(emb.image, emb.text), "n": len(emb), "per_modality": {}}
    for modality in sorted({r.modality for r in emb.rows if r.modality}):
        idx = [i for i, r in enumerate(emb.rows) if r.modality == modality]
        out["per_modality"][modality] = {**recall_at_k(emb.image[idx], emb.text[idx]), "n": len(idx)}
    return out


def evaluate(model, manifest: str | Path, split: str = "test", tasks=TASKS, prompts: str | Path | None = None,
             progress: bool = True) -> dict:
    data = read_manifest(manifest)
    rows = data.split(split)
    if not rows:
        raise ManifestError(f"{manifest}: no usable row in split {split!r}")
    emb = embed_rows(model, rows, progress=progress)
    result: dict = {"split": split, "n": len(emb), "skipped": len(emb.skipped) + len(data.unusable)}
    if "zeroshot" in tasks:
        result["zeroshot"] = zeroshot_scores(model, emb, load_prompts(prompts))
    if "retrieval" in tasks:
        result["retrieval"] = retrieval_scores(emb)
    if "linear-probe" in tasks:
        train = data.split("train") if split != "train" else rows
        result["linear_probe"] = linear_probe_scores(embed_rows(model, train, progress=progress), emb)
    if "routing" in tasks:
        result["routing"] = routing_scores(model, emb)
    if "grounding" in tasks:
        result["grounding"] = grounding_scores(model, rows)
    return result
