"""A run's optimiser and learning-rate schedule, as its recipe sets them (``medmoe/recipes/``).

- ``adamw`` (medmoe's default) or ``adam`` (the paper's and GLoRIA's, whose weight decay is an L2
  term); biases and norms are never decayed; ``router_lr_mult`` scales the learning rate of both
  routers (a rare modality's routing can then learn faster than the representation).
- ``cosine``: linear warm-up, then cosine decay to 0 at the last step; ``constant`` (after the
  warm-up); ``plateau``: GLoRIA's ReduceLROnPlateau, halving the learning rate when the validation
  loss has not improved for ``plateau_patience`` evaluations (stepped by the trainer at each one).
"""
from __future__ import annotations

import math

import torch

PLATEAU_FACTOR = 0.5  # GLoRIA's ReduceLROnPlateau factor


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def param_groups(model, lr: float, weight_decay: float, router_lr_mult: float) -> list[dict]:
    """Trainable parameters in groups: decayed (matrices, kernels) or not (biases, norms), and, when
    ``router_lr_mult != 1``, routers apart with the scaled learning rate."""
    routers = [model.gate.image_router, model.gate.text_router] if model.gate is not None else []
    router_ids = {id(p) for r in routers for p in r.parameters()} if router_lr_mult != 1 else set()
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((p.ndim < 2, id(p) in router_ids), []).append(p)
    return [{"params": params, "weight_decay": 0.0 if no_decay else weight_decay,
             "lr": lr * (router_lr_mult if router else 1.0)} for (no_decay, router), params in sorted(groups.items())]


def build_optimizer(model, args) -> torch.optim.Optimizer:
    groups = param_groups(model, args.lr, args.weight_decay, args.router_lr_mult)
    return (torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam)(groups, lr=args.lr)


def build_scheduler(optimizer, args, steps: int):
    if args.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=PLATEAU_FACTOR,
                                                          patience=args.plateau_patience)
    warmup = min(args.warmup, steps // 5)
    if args.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, steps))


def upcycle(model, optimizer: torch.optim.Optimizer) -> None:
    """Sparse upcycling at the split: ``model.upcycle()`` copies expert 0 into every expert, and each
    copy starts from expert 0's optimizer state too, so the copies are the same expert until the
    routing sends them different data."""
    experts = model.image.experts.experts
    model.upcycle()
    for copy in experts[1:]:
        for source, target in zip(experts[0].parameters(), copy.parameters()):
            if source in optimizer.state:
                optimizer.state[target] = {k: v.clone() if torch.is_tensor(v) else v
                                           for k, v in optimizer.state[source].items()}
