"""Routing (paper Sec. 4.3) in one module, in the style of fairseq's ``top1gating``.

The gate owns both routers, alpha = softmax(W2 ReLU(W1 x)): the report router on the global
report embedding t_g and the image router on the pooled final Swin stage F4 (inference has no
report). It owns the modality table: modality m (its index in ``config.modalities``) is assigned
expert m mod K, the target of the auxiliary loss (Sec. 4.5). And it owns the routing policy:

- ``config.routing``: which router drives dispatch when a report is given: ``text`` (the paper),
  ``label`` (the modality label: the oracle, an upper bound of learned routing; the report decides
  for an unlabelled sample) or ``image``. Without a report the image router decides.
- ``config.dispatch``: ``top1`` (k* = argmax alpha, one expert per sample) or ``soft`` (every
  expert, weighted by alpha).
- ``config.detach_routers``: the routers read detached features, so the auxiliary loss trains the
  routers only and leaves the image and text encoders to the contrastive losses.
- ``config.expert_init = "upcycle"``: until the model is upcycled every sample goes to expert 0 (one
  expert, K = 1) while both routers learn; ``MedMoE.upcycle`` then copies expert 0 into all K and
  the gate routes as above (sparse upcycling, Komatsuzaki et al., ICLR 2023).

Each decision comes back as a ``Route``: the chosen experts, the mixing weights of soft dispatch,
both routers' logits, the auxiliary target and ``stats()`` (load per expert, router entropy,
router accuracy against the modality label), which the trainer logs. Design and departures from the
paper and the authors' code: ``docs/design.md`` §3 (routing) and §9 (oracle, detached routers, upcycling).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import MedMoEConfig, modality_index


class Router(nn.Module):
    """Router logits W2 ReLU(W1 x); alpha is their softmax (Sec. 4.3)."""

    def __init__(self, in_dim: int, hidden: int, num_experts: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_experts))

    @classmethod
    def of(cls, config: MedMoEConfig, in_dim: int) -> Router:
        return cls(in_dim, config.router_hidden, config.num_experts)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


@dataclass
class Route:
    """One routing decision for a batch of B samples and K experts."""

    expert: Tensor  # k* [B]
    weights: Tensor | None  # soft dispatch's mixing weights [B, K]; None for top-1
    image_logits: Tensor  # the image router's logits [B, K]
    text_logits: Tensor | None  # the report router's logits [B, K]; None without a report
    target: Tensor | None  # the expert assigned to each sample's modality [B], -1 unknown; None without labels

    @property
    def logits(self) -> list[Tensor]:
        """The logits of each router that ran: what the auxiliary loss trains."""
        return [x for x in (self.image_logits, self.text_logits) if x is not None]

    @classmethod
    def cat(cls, routes: list[Route]) -> Route:
        """Several micro-batches' routes as one batch's."""
        def join(name):
            parts = [getattr(r, name) for r in routes]
            return None if parts[0] is None else torch.cat(parts)

        return cls(*(join(name) for name in ("expert", "weights", "image_logits", "text_logits", "target")))

    @torch.no_grad()
    def stats(self) -> dict:
        """``load``: the share of samples sent to each expert; per router (``image``, ``text``): the
        mean entropy of its probabilities (nats; log K is uniform) and, over the samples whose
        modality is known, the accuracy of its argmax against the modality's expert."""
        k = self.image_logits.shape[1]
        out = {"load": (torch.bincount(self.expert, minlength=k).float() / max(len(self.expert), 1)).tolist()}
        known = self.target >= 0 if self.target is not None else None
        for side, logits in (("image", self.image_logits), ("text", self.text_logits)):
            if logits is None:
                continue
            logp = logits.float().log_softmax(dim=1)
            out[f"entropy_{side}"] = float(-(logp.exp() * logp).sum(1).mean())
            if known is not None and known.any():
                out[f"accuracy_{side}"] = float((logits.argmax(1)[known] == self.target[known]).float().mean())
        return out


class Gate(nn.Module):
    """Both routers, the modality table and the routing policy (see the module docstring).

    The routers are built by the caller, in the order that keeps a seeded model's initial weights
    (the image router right after the image side, the report router after the text encoder).
    """

    def __init__(self, config: MedMoEConfig, image_router: Router, text_router: Router):
        super().__init__()
        self.num_experts, self.modalities = config.num_experts, list(config.modalities)
        self.policy, self.soft, self.detach = config.routing, config.dispatch == "soft", config.detach_routers
        self.image_router, self.text_router = image_router, text_router
        # an upcycled model routes to all K experts; before its split, to expert 0 only (saved with the model)
        self.upcycling = config.expert_init == "upcycle"
        self.register_buffer("upcycled", torch.tensor(not self.upcycling))

    def modality_index(self, names: list[str | None]) -> Tensor:
        """Modality names -> indices into ``config.modalities`` (-1 for unknown or missing)."""
        return torch.tensor([modality_index(self.modalities, n) for n in names], dtype=torch.long)

    def expert_of(self, modality: Tensor) -> Tensor:
        """The expert each modality index is assigned to (index mod K); -1 stays -1."""
        return torch.where(modality >= 0, modality % self.num_experts, modality)

    def expert_modalities(self) -> dict[int, list[str]]:
        """The modalities assigned to each expert."""
        assigned = self.expert_of(torch.arange(len(self.modalities))).tolist()
        return {k: [m for m, e in zip(self.modalities, assigned) if e == k] for k in range(self.num_experts)}

    def forward(self, pooled: Tensor, text_global: Tensor | None = None, modality: Tensor | None = None) -> Route:
        """Route a batch from the pooled F4 [B, C_4], the report embedding t_g [B, D] if there is a
        report, and the modality indices [B] (-1 unknown) if they are known."""
        if self.detach:
            pooled, text_global = pooled.detach(), None if text_global is None else text_global.detach()
        image_logits = self.image_router(pooled)
        text_logits = None if text_global is None else self.text_router(text_global)
        target = None if modality is None else self.expert_of(modality.to(pooled.device))
        policy = "image" if text_logits is None else self.policy
        probs = (image_logits if policy == "image" else text_logits).softmax(dim=1)  # soft dispatch learns through these
        expert = probs.detach().argmax(dim=1)
        if policy == "label":
            if target is None:
                raise ValueError("routing='label' needs modality labels")
            expert = torch.where(target >= 0, target, expert)  # unknown modality: the report decides
            probs = F.one_hot(expert, self.num_experts).to(probs.dtype)
        if self.upcycling:  # before the split, expert 0 (no branch on the flag's value: it traces and compiles)
            expert = torch.where(self.upcycled, expert, torch.zeros_like(expert))
            probs = torch.where(self.upcycled, probs, F.one_hot(expert, self.num_experts).to(probs.dtype))
        return Route(expert, probs if self.soft else None, image_logits, text_logits, target)
