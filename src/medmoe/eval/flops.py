"""Parameters and multiply-adds of the image side, as the paper's Table 3 counts them.

Counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` records every matmul,
convolution and attention product of one forward pass at batch 1 (MACs = FLOPs / 2).
``params_total`` includes all K experts; ``gmacs_active`` runs one expert (hard top-1
routing, what inference costs); ``gmacs_all_experts`` runs all K, the cost of the authors'
public code, which computes every expert and discards K - 1. A shared expert (``shared_expert``)
is always active. The image side is the image encoder and the image router (not the report router).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import MedMoEConfig


def count_gmacs(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2e9


def image_side_cost(config: MedMoEConfig) -> dict:
    from ..model.gate import Gate, Router
    from ..model.medmoe import ImageEncoder, encode_image, encode_image_all_experts

    encoder = ImageEncoder(config).eval()
    gate = Gate(config, Router.of(config, encoder.backbone.channels[-1]), Router.of(config, config.embed_dim)).eval() \
        if config.moe else None
    params_total = sum(p.numel() for p in encoder.parameters())
    params_total += sum(p.numel() for p in gate.image_router.parameters()) if gate is not None else 0
    image = torch.zeros(1, 3, config.image_size, config.image_size)
    with torch.no_grad():
        gmacs_active = count_gmacs(lambda: encode_image(encoder, gate, image))
        if config.moe and config.dispatch == "top1":
            extra = sum(p.numel() for p in encoder.experts.experts[1:].parameters())
            gmacs_all = count_gmacs(lambda: encode_image_all_experts(encoder, gate, image))
        else:  # one head, or soft dispatch: everything is active
            extra, gmacs_all = 0, gmacs_active
    return {
        "params_total": params_total,
        "params_active": params_total - extra,
        "gmacs_active": round(gmacs_active, 4),
        "gmacs_all_experts": round(gmacs_all, 4),
    }
