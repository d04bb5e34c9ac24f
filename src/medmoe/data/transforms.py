"""Grey image [H, W] in [0, 1] -> model input [3, S, S], in plain torch (no torchvision)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics: what pretrained Swin weights expect.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def to_model_input(image: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (antialiased bilinear), centre-crop, grey -> RGB, normalise."""
    x = torch.as_tensor(image, dtype=torch.float32)[None, None]
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    x = x[:, top : top + size, left : left + size].clamp(0, 1)
    return (x.expand(3, -1, -1) - MEAN) / STD
