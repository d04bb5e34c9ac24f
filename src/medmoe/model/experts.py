"""Convolutional experts, routers and hard top-1 dispatch (paper Section 4.3).

Each expert E_k maps the pyramid F = {F1..F4} to one local map V_k [D, G, G]:

1. per scale l, a 1x1 conv + BatchNorm + ReLU projects C_l -> D, then a 2-D bilinear resize
   brings F_k^(l) to the G x G grid (the authors' code resizes flattened tokens in 1-D);
2. cross-scale attention: a small per-location scorer gives one logit per scale, a softmax over
   the L scales gives beta_k^(l), and V_k = sum_l beta_k^(l) F_k^(l)  (Eq. for V_k, Sec. 4.3);
3. a conv head: 3x3 depthwise conv + BatchNorm + ReLU, then a 1x1 conv (no activation, so the
   local features can take any sign for the cosine similarities of the local loss).

Dispatch (the routing decision itself is ``gate.py``'s): V_local = V_k* (Sec. 4.3). Only the
selected expert runs for each sample: the batch is grouped by expert. An optional shared expert runs
on every sample and its map is added to the routed one (DeepSeekMoE's shared experts). Design and
departures from the authors' code: ``docs/design.md`` §2 (and §9 for the shared expert).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import batch_norm_together, syncs_batchnorm


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Expert(nn.Module):
    """One expert E_k: multi-scale projection, cross-scale attention, conv head."""

    def __init__(self, channels: list[int], dim: int, grid: int, attn_dim: int):
        super().__init__()
        self.grid = grid
        self.project = nn.ModuleList(conv_bn_relu(c, dim) for c in channels)
        self.scale_scorer = nn.Sequential(  # none for a single scale: nothing to weigh
            nn.Conv2d(dim, attn_dim, 1), nn.ReLU(inplace=True), nn.Conv2d(attn_dim, 1, 1)
        ) if len(channels) > 1 else None
        self.head = nn.Sequential(conv_bn_relu(dim, dim, kernel=3, groups=dim), nn.Conv2d(dim, dim, 1))

    def projections(self, pyramid: list[torch.Tensor]) -> list[tuple[nn.Sequential, torch.Tensor]]:
        """(block, 1x1 conv output) per scale: the projections before their BatchNorm + ReLU."""
        return [(proj, proj[0](feat)) for proj, feat in zip(self.project, pyramid)]

    def scale_maps(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        """Projected, resized pyramid F_k^(l): L maps [B, D, G, G]."""
        return self.resize(norm_relu(self.projections(pyramid)))

    def resize(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        size = (self.grid, self.grid)
        return [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                for m in maps]

    def scale_weights(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """beta_k^(l): softmax over scales of the per-location scores, [B, L, G, G]."""
        return torch.cat([self.scale_scorer(m) for m in maps], dim=1).softmax(dim=1)

    def fuse(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """V_k = sum_l beta_k^(l) F_k^(l)."""
        if self.scale_scorer is None:
            return maps[0]
        beta = self.scale_weights(maps)
        fused = maps[0] * beta[:, :1]
        for l in range(1, len(maps)):  # accumulated in place: no [B, D, G, G] temporary per scale
            fused.addcmul_(maps[l], beta[:, l : l + 1])
        return fused

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return run_experts([self], [pyramid])[0]


def norm_relu(pairs: list[tuple[nn.Sequential, torch.Tensor]]) -> list[torch.Tensor]:
    """The BatchNorm + ReLU of ``conv_bn_relu`` blocks, given each block's conv output; the batch
    norms of all blocks normalise together (one collective under DDP with SyncBatchNorm2d)."""
    normed = batch_norm_together([(block[1], x) for block, x in pairs])
    return [block[2](y) for (block, _), y in zip(pairs, normed)]


def run_experts(experts: list[Expert], pyramids: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Each expert on its own pyramid, stage by stage (projections of every expert and scale, then
    fusion, then heads), so that a stage's batch norms normalise together: under DDP with
    synchronised batch norm, 2 collectives per forward instead of one per layer and expert."""
    projected = iter(norm_relu([pair for e, pyr in zip(experts, pyramids) for pair in e.projections(pyr)]))
    fused = [e.fuse(e.resize([next(projected) for _ in e.project])) for e in experts]
    heads = norm_relu([(e.head[0], e.head[0][0](x)) for e, x in zip(experts, fused)])
    return [e.head[1](h) for e, h in zip(experts, heads)]


class ExpertMixture(nn.Module):
    """K experts (and optionally a shared one) that dispatch a batch as the gate decided."""

    def __init__(self, num_experts: int, channels: list[int], dim: int, grid: int, attn_dim: int,
                 shared: bool = False):
        super().__init__()
        self.experts = nn.ModuleList(Expert(channels, dim, grid, attn_dim) for _ in range(num_experts))
        self.shared = Expert(channels, dim, grid, attn_dim) if shared else None

    def forward(self, pyramid: list[torch.Tensor], expert: torch.Tensor, weights: torch.Tensor | None = None):
        """Hard top-1 (``weights`` None): group the batch by ``expert`` [B], run each group through its
        expert, restore the order. Soft (``weights`` [B, K]): every expert on every sample, weighted.
        Under distributed training with synchronised batch norm, an expert no sample goes to still runs
        (on an empty batch): every rank must join each expert's collectives, whatever its own routing."""
        if weights is not None:
            every, shared = self._every(pyramid)
            return _plus(torch.einsum("kbdhw,bk->bdhw", every, weights), shared)
        order = torch.argsort(expert, stable=True)
        counts = torch.bincount(expert, minlength=len(self.experts)).tolist()
        groups = zip(*(f[order].split(counts) for f in pyramid))  # per expert: its rows of F1..F4
        every = self.training and syncs_batchnorm(self)
        chosen = [(e, list(levels)) for e, levels, n in zip(self.experts, groups, counts) if n or every]
        if self.shared is not None:
            chosen.append((self.shared, pyramid))
        maps = run_experts(*zip(*chosen))
        routed = torch.cat(maps[: len(maps) - (self.shared is not None)])[torch.argsort(order)]
        return _plus(routed, maps[-1] if self.shared is not None else None)

    def forward_all(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """Every expert's map on every sample, [K, B, D, G, G], the shared map added (reference, FLOPs, ONNX)."""
        return _plus(*self._every(pyramid))

    def _every(self, pyramid: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(every routed expert's map [K, B, D, G, G], the shared expert's map [B, D, G, G] or None)."""
        modules = [*self.experts, *([self.shared] if self.shared is not None else [])]
        maps = run_experts(modules, [pyramid] * len(modules))
        return torch.stack(maps[: len(self.experts)]), (maps[-1] if self.shared is not None else None)

    @torch.no_grad()
    def replicate(self, source: int = 0) -> None:
        """Copy expert ``source``'s weights and batch-norm statistics into every other expert (upcycling)."""
        state = self.experts[source].state_dict()
        for k, e in enumerate(self.experts):
            if k != source:
                e.load_state_dict(state)


def _plus(x: torch.Tensor, shared: torch.Tensor | None) -> torch.Tensor:
    """The routed map(s) plus the shared expert's map, if there is one."""
    return x if shared is None else x + shared
