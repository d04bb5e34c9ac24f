"""One optimisation step's forward and backward, with gradient accumulation that adds negatives.

With ``A`` micro-batches (open_clip's ``--accum-freq``): embed all A without gradients and cache
the loss inputs (embeddings), then for each micro-batch recompute its inputs with gradients and
take the loss over the whole accumulated batch (fresh inputs for it, cached ones for the rest), and
backpropagate. Each pass carries the gradient through one micro-batch's inputs only, so the
sum over passes is the gradient of one batch of A x micro-batch size (exactly, for a model
without batch statistics). Every forward of micro-batch j draws its random numbers (dropout)
from the same seed, so the recomputed inputs equal the cached ones.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..seeding import derive_seed


def loss_inputs(model, raw_model, batch: dict, device: torch.device) -> dict:
    """The loss inputs of one batch: ``MedMoELoss(**loss_inputs(...))``."""
    modality = batch["modality"].to(device)
    image, text = model(batch["images"].to(device, non_blocking=True), batch["reports"], modality)
    return {"image_global": image.global_emb, "text_global": text.global_emb, "regions": image.local_map,
            "words": text.words, "lengths": text.lengths,
            "router_logits": [r for r in (image.router_logits, text.router_logits) if r is not None],
            "aux_target": raw_model.expert_targets(modality)}


def concat_loss_inputs(parts: list[dict]) -> dict:
    """Loss inputs of several micro-batches as those of one batch (words padded to the longest report)."""
    n = max(p["words"].shape[1] for p in parts)
    out = {k: torch.cat([p[k] for p in parts]) for k in ("image_global", "text_global", "regions", "lengths",
                                                         "aux_target")}
    out["words"] = torch.cat([F.pad(p["words"], (0, 0, 0, n - p["words"].shape[1])) for p in parts])
    out["router_logits"] = [torch.cat(rs) for rs in zip(*(p["router_logits"] for p in parts))]
    return out


def split_batch(batch: dict, parts: int) -> list[dict]:
    """A collated batch of n >= ``parts`` samples as ``parts`` micro-batches (sizes differ by at most one)."""
    n = len(batch["reports"])
    bounds = [k * n // parts for k in range(parts + 1)]
    return [{"images": batch["images"][a:b], "reports": batch["reports"][a:b], "modality": batch["modality"][a:b]}
            for a, b in zip(bounds, bounds[1:])]


def forward_backward(model, raw_model, criterion, micro: list[dict], device, autocast, seed: int) -> dict:
    """Accumulate into ``.grad`` the gradient of the loss over all of ``micro``; returns the losses
    (detached). ``model`` may be DDP-wrapped (gradients are all-reduced on the last pass only);
    ``seed`` keys the random numbers of every forward of this step."""
    def embed(j: int) -> dict:
        torch.manual_seed(derive_seed(seed, "micro-batch", j))
        return loss_inputs(model, raw_model, micro[j], device)

    if len(micro) == 1:
        with autocast():
            losses = criterion(**embed(0))
        losses["total"].backward()
        return {k: v.detach() for k, v in losses.items()}
    with torch.no_grad(), autocast():
        cache = [embed(j) for j in range(len(micro))]
    for j in range(len(micro)):
        last = j == len(micro) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast():
                losses = criterion(**concat_loss_inputs(cache[:j] + [embed(j)] + cache[j + 1:]))
            losses["total"].backward()
    return {k: v.detach() for k, v in losses.items()}
