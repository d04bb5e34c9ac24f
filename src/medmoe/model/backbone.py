"""Swin Transformer feature pyramid F = {F1..F4} (paper Section 4.2).

F_l is the output of Swin stage l *before* its patch merging, at stride 4, 8, 16, 32
(Swin-T at 224 px: 96x56x56, 192x28x28, 384x14x14, 768x7x7), which is what
``transformers.SwinBackbone(out_features=["stage1", ..., "stage4"])`` returns. The authors'
public code instead takes ``hidden_states[0:4]`` (patch embedding plus post-merge maps); we
follow the paper.
"""
from __future__ import annotations

import torch
from torch import nn

STAGES = ["stage1", "stage2", "stage3", "stage4"]


class SwinPyramid(nn.Module):
    """Image [B, 3, H, W] -> list of 4 maps [B, C_l, H / 2^(l+1), W / 2^(l+1)]."""

    def __init__(self, image_size: int, swin: dict, pretrained: str | None = None):
        super().__init__()
        from transformers import SwinBackbone, SwinConfig

        if pretrained:
            self.swin = SwinBackbone.from_pretrained(pretrained, out_features=STAGES)
        else:
            config = SwinConfig(image_size=image_size, out_features=STAGES, **swin)
            self.swin = SwinBackbone(config)
        self.channels: list[int] = list(self.swin.num_features[1:])  # C_1..C_4

    def architecture(self) -> dict:
        """The SwinConfig fields that define this backbone (saved with the model)."""
        c = self.swin.config
        keys = ["embed_dim", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio"]
        return {k: getattr(c, k) for k in keys}

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The maps in channels-last memory (NHWC strides; the shapes stay [B, C, H, W]): the experts'
        convolutions, batch norms and resizing run about twice as fast on it on CPU (benchmarks/RESULTS.md)."""
        return [m.contiguous(memory_format=torch.channels_last) for m in self.swin(images).feature_maps]
