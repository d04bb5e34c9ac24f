"""Held-out scores the trainer logs: retrieval R@1 both ways and routing accuracy."""
from __future__ import annotations

import torch

from .retrieval import recall_at_k


@torch.no_grad()
def embed(model, loader) -> dict:
    """Global embeddings, chosen experts and modality targets of every usable row."""
    model.eval()
    parts: dict[str, list] = {k: [] for k in ("image", "text", "image_expert", "text_expert", "modality")}
    skipped = []
    for batch in loader:
        skipped += batch["skipped"]
        if not batch["reports"]:
            continue
        image, text = model.encode_image(batch["images"]), model.encode_text(batch["reports"])
        parts["image"].append(image.global_emb)
        parts["text"].append(text.global_emb)
        parts["image_expert"].append(image.expert)
        parts["text_expert"].append(text.router_logits.argmax(1) if text.router_logits is not None else image.expert)
        parts["modality"].append(batch["modality"])
    out = {k: torch.cat(v) for k, v in parts.items() if v}
    out["skipped"] = skipped
    return out


def held_out_scores(model, loader) -> dict:
    e = embed(model, loader)
    if "image" not in e:
        return {"n": 0, "skipped": e["skipped"]}
    n = len(e["image"])
    scores = {"n": n, "chance_r1": round(1 / n, 5),
              **{k: round(v, 4) for k, v in recall_at_k(e["image"], e["text"], ks=(1, 5)).items()}}
    target = model.expert_targets(e["modality"])
    known = target >= 0
    if model.config.moe and known.any():
        for side in ("image", "text"):
            scores[f"routing_acc_{side}"] = round((e[f"{side}_expert"][known] == target[known]).float().mean().item(), 4)
    scores["skipped"] = e["skipped"]
    return scores
