"""Grounding: does a finding word's attention (the local loss's word-region attention, Sec. 4.4)
land on the finding? Scored on rows whose finding has a mask.

* pointing game: share of finding words whose attention peak lies inside the mask;
* attention in mask: share of the word's attention mass inside the mask;
each next to what a uniform attention map gets (the mask's share of the image).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data.io import load_image
from ..data.manifest import Row
from ..data.transforms import ImageTransform, to_model_view
from ..losses import word_attention


@torch.no_grad()
def report_attention(model, images: torch.Tensor, reports: list[str]):
    """With a report at hand the report router picks the expert. Returns (ImageOutput, TextOutput,
    attention [B, N, G, G])."""
    model.eval()
    text = model.encode_text(reports)
    expert = text.router_logits.argmax(1) if text.router_logits is not None else None
    image = model.encode_image(images, expert)
    return image, text, word_attention(image.local_map, text.words, text.lengths, model.config.temp1)


def finding_words(tokens: list[str], finding: str) -> list[int]:
    """Indices of the report's words that name the finding (any word of its name)."""
    names = set(finding.lower().split())
    return [i for i, t in enumerate(tokens) if t.lower() in names]


def _word_scores(attention: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(peak inside mask, attention mass inside mask) for one word map [G, G] and a mask [S, S]."""
    up = F.interpolate(attention[None, None], size=mask.shape, mode="bilinear", align_corners=False)[0, 0]
    up = up.clamp(min=0) / up.clamp(min=0).sum()
    return float(mask.flatten()[up.argmax()]), float(up[mask].sum())


def grounding_scores(model, rows: list[Row], batch_size: int = 32) -> dict:
    transform = ImageTransform.of(model.config)
    cases = [r for r in rows if r.mask is not None and r.labels and r.labels[0] != "normal"]
    per: dict[str, list[tuple[float, float, float]]] = {}
    for start in range(0, len(cases), batch_size):
        batch, images, masks = [], [], []
        for r in cases[start : start + batch_size]:
            try:
                images.append(transform(transform.load(r.image)))
                masks.append(to_model_view(load_image(r.mask), transform.size) > 0.5)
                batch.append(r)
            except ValueError:
                continue
        if not batch:
            continue
        _, text, attention = report_attention(model, torch.stack(images), [r.report for r in batch])
        for b, r in enumerate(batch):
            if not masks[b].any():
                continue
            for n in finding_words(text.tokens[b], r.labels[0]):
                hit, mass = _word_scores(attention[b, n], masks[b])
                per.setdefault(r.modality or "unknown", []).append((hit, mass, float(masks[b].float().mean())))
    return {**_summary([v for vs in per.values() for v in vs]),
            "per_modality": {m: _summary(v) for m, v in sorted(per.items())}}


def _summary(values: list[tuple[float, float, float]]) -> dict:
    if not values:
        return {"n_words": 0}
    hit, mass, area = np.array(values).mean(0)
    return {"pointing_game": float(hit), "attention_in_mask": float(mass), "uniform_pointing_game": float(area),
            "uniform_attention_in_mask": float(area), "n_words": len(values)}

