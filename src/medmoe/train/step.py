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

from ..model.gate import Route
from ..seeding import derive_seed


def embed(model, batch: dict, device: torch.device) -> dict:
    """The loss inputs of one batch: ``MedMoELoss(**embed(...))`` (``MedMoE.forward``)."""
    return model(batch["images"].to(device, non_blocking=True), batch["tokens"], batch["modality"].to(device))


def concat_loss_inputs(parts: list[dict]) -> dict:
    """Loss inputs of several micro-batches as those of one batch (words padded to the longest report)."""
    n = max(p["words"].shape[1] for p in parts)
    out = {k: torch.cat([p[k] for p in parts]) for k in ("image_global", "text_global", "regions", "lengths")}
    out["words"] = torch.cat([F.pad(p["words"], (0, 0, 0, n - p["words"].shape[1])) for p in parts])
    out["route"] = None if parts[0]["route"] is None else Route.cat([p["route"] for p in parts])
    return out


def split_batch(batch: dict, parts: int) -> list[dict]:
    """A collated batch of n >= ``parts`` samples as ``parts`` micro-batches (sizes differ by at most one)."""
    n = len(batch["reports"])
    bounds = [k * n // parts for k in range(parts + 1)]
    return [{"images": batch["images"][a:b], "reports": batch["reports"][a:b], "modality": batch["modality"][a:b],
             "tokens": batch["tokens"].rows(a, b)} for a, b in zip(bounds, bounds[1:])]


def forward_backward(model, criterion, micro: list[dict], device, autocast, seed: int) -> tuple[dict, Route | None]:
    """Accumulate into ``.grad`` the gradient of the loss over all of ``micro``; returns the losses
    (detached) and the step's route (None without experts). ``model`` may be DDP-wrapped (gradients
    are all-reduced on the last pass only); ``seed`` keys the random numbers of every forward."""
    def inputs(j: int) -> dict:
        torch.manual_seed(derive_seed(seed, "micro-batch", j))
        return embed(model, micro[j], device)

    if len(micro) == 1:
        with autocast():
            losses = criterion(**(step := inputs(0)))
        losses["total"].backward()
        return {k: v.detach() for k, v in losses.items()}, step["route"]
    with torch.no_grad(), autocast():
        cache = [inputs(j) for j in range(len(micro))]
    for j in range(len(micro)):
        last = j == len(micro) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast():
                losses = criterion(**(step := concat_loss_inputs(cache[:j] + [inputs(j)] + cache[j + 1:])))
            losses["total"].backward()
    return {k: v.detach() for k, v in losses.items()}, step["route"]
