"""Low-rank adapters (LoRA, Hu et al. 2021) on linear layers, for ``medmoe finetune --mode lora``.

    names = add_lora(model.image.backbone, rank=8, alpha=16, seed=0)   # Swin attention and MLP layers
    ... train lora_parameters(model) (and a head); every other weight stays as it was ...
    merge_lora(model.image.backbone)                                   # plain nn.Linear layers again

A wrapped layer computes ``base(x) + scale * (x A^T) B^T`` with ``A`` [r, in] (Kaiming-uniform, seeded) and
``B`` [out, r] (zeros, so training starts from the base model exactly) and ``scale = alpha / r``; the base
layer's weight and bias are frozen. ``merge_lora`` replaces each wrapper by one ``nn.Linear`` with
``W + scale * B A``, so a merged model is a plain model: it saves, loads and exports as any other.

Not ``peft``: it needs ``accelerate`` (and ``psutil``) at import and has no pinned version tested with this
stack's transformers; the part of it used here is the wrapper below.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """``base`` (frozen) plus a trainable low-rank update of rank ``rank``."""

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0, generator: torch.Generator | None = None):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1 (got {rank})")
        self.base, self.rank, self.scale = base.requires_grad_(False), rank, alpha / rank
        weight = base.weight
        a = torch.empty(rank, base.in_features, dtype=weight.dtype)
        bound = 1 / math.sqrt(base.in_features)  # kaiming_uniform_(a=sqrt(5)), nn.Linear's own init
        a.uniform_(-bound, bound, generator=generator)
        self.lora_a = nn.Parameter(a.to(weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=weight.dtype, device=weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def delta(self) -> torch.Tensor:
        """The update of the base weight, ``scale * B A`` [out, in]."""
        return (self.lora_b @ self.lora_a) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """One ``nn.Linear`` computing what this layer computes (the base weight plus the update)."""
        base = self.base
        out = nn.utils.skip_init(nn.Linear, base.in_features, base.out_features, bias=base.bias is not None,
                                 device=base.weight.device, dtype=base.weight.dtype)
        out.weight.copy_(base.weight + self.delta().to(base.weight.dtype))
        if base.bias is not None:
            out.bias.copy_(base.bias)
        return out


def swin_block_linear(name: str, module: nn.Module) -> bool:
    """The default targets: every linear layer inside a Swin block, i.e. the attention's query, key, value
    and output projections and the MLP's two layers (not the patch merging between stages)."""
    return isinstance(module, nn.Linear) and ".blocks." in f".{name}"


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def add_lora(root: nn.Module, rank: int = 8, alpha: float = 16.0, seed: int = 0, target=swin_block_linear) -> list[str]:
    """Wrap every linear layer of ``root`` that ``target(name, module)`` selects in a ``LoRALinear``, in
    name order, each ``A`` drawn from one generator seeded with ``seed``; returns the wrapped names."""
    generator = torch.Generator().manual_seed(seed)
    names = sorted(n for n, m in root.named_modules() if n and not isinstance(m, LoRALinear) and target(n, m)
                   and not any(isinstance(p, LoRALinear) for p in _parents(root, n)))
    if not names:
        raise ValueError("no layer to adapt: the target selects no linear layer")
    for name in names:
        _set(root, name, LoRALinear(root.get_submodule(name), rank, alpha, generator))
    return names


def _parents(root: nn.Module, name: str) -> list[nn.Module]:
    parts = name.split(".")
    return [root.get_submodule(".".join(parts[:i])) for i in range(1, len(parts))]


def lora_parameters(root: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters (every ``A`` and ``B``) under ``root``."""
    return [p for m in root.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]


def merge_lora(root: nn.Module) -> int:
    """Replace every ``LoRALinear`` under ``root`` by its merged ``nn.Linear`` (trainable as the base layer
    was before it was wrapped: ``requires_grad`` is left on); returns how many were merged."""
    names = [n for n, m in root.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        _set(root, name, root.get_submodule(name).merged())
    return len(names)
