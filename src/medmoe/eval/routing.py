"""Routing quality: does each router send a modality to its expert? Accuracy against the expert
assigned to the modality label, the modality x expert confusion matrix, and the expert load."""
from __future__ import annotations

import torch

from .embed import Embeddings


def routing_scores(model, emb: Embeddings) -> dict:
    modalities, k = list(model.config.modalities), model.config.num_experts
    out: dict = {"modalities": modalities, "num_experts": k if emb.image_expert is not None else 0}
    if emb.image_expert is None or not len(emb):
        return out
    target = model.gate.expert_of(emb.modality)
    known = emb.modality >= 0
    for side, chosen in (("image", emb.image_expert), ("text", emb.text_expert)):
        confusion = torch.zeros(len(modalities), k, dtype=torch.long)
        confusion.index_put_((emb.modality[known], chosen[known]), torch.ones(int(known.sum()), dtype=torch.long),
                             accumulate=True)
        out[side] = {
            "accuracy": float((chosen[known] == target[known]).float().mean()) if known.any() else float("nan"),
            "confusion": confusion.tolist(),
            "per_modality": {m: row[e].item() / row.sum().item() for m, row, e in
                             zip(modalities, confusion, model.gate.expert_of(torch.arange(len(modalities))).tolist())
                             if row.sum()},  # share of modality m's images sent to its expert
            "load": (torch.bincount(chosen, minlength=k).float() / len(chosen)).tolist(),
        }
    return out
