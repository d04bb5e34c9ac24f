"""Cross-modal retrieval: recall@K of the paired item, both directions."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def recall_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Item i's pair is item i. ``i2t_rK``: share of images whose report ranks in the top K."""
    sim = F.normalize(image_emb.float(), dim=1) @ F.normalize(text_emb.float(), dim=1).T
    truth = sim.diagonal()[:, None]
    # rank = number of candidates strictly better than the pair (ties count in the pair's favour)
    i2t_rank = (sim > truth).sum(1)
    t2i_rank = (sim.T > truth).sum(1)
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = (i2t_rank < k).float().mean().item()
        out[f"t2i_r{k}"] = (t2i_rank < k).float().mean().item()
    return out


def retrieval_scores(emb) -> dict:
    """Recall@K of embedded rows (``embed_rows``), overall and within each modality."""
    out = {**recall_at_k(emb.image, emb.text), "n": len(emb), "per_modality": {}}
    for modality in sorted({r.modality for r in emb.rows if r.modality}):
        idx = [i for i, r in enumerate(emb.rows) if r.modality == modality]
        out["per_modality"][modality] = {**recall_at_k(emb.image[idx], emb.text[idx]), "n": len(idx)}
    return out
