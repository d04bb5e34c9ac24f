"""Grey image [H, W] in [0, 1] -> model input [3, S, S], in plain torch (no torchvision)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics: what pretrained Swin weights expect.
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def to_model_view(image: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """What the model sees, before normalisation: shorter side resized to ``size`` (antialiased
    bilinear), centre-cropped to [size, size]. Also maps finding masks onto the model's view."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))[None, None]
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)[0, 0]
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return x[top : top + size, left : left + size].clamp(0, 1)


def to_model_input(image: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """``to_model_view``, grey -> 3 channels, ImageNet normalisation: [3, size, size]."""
    return (to_model_view(image, size).expand(3, -1, -1) - MEAN) / STD


def augment(image: np.ndarray, size: int, generator: torch.Generator,
            scale: tuple[float, float] = (0.7, 1.0), jitter: float = 0.1) -> torch.Tensor:
    """Train-time view: random resized crop (70-100 % of the area, aspect 3:4-4:3) and a small
    brightness/contrast jitter. No flips (reports say left and right) and no colour tricks."""
    x = torch.as_tensor(image, dtype=torch.float32)
    h, w = x.shape
    u = torch.rand(5, generator=generator).tolist()
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
    aspect = math.exp(math.log(3 / 4) + math.log(16 / 9) * u[1])
    ch, cw = min(h, round(math.sqrt(area / aspect))), min(w, round(math.sqrt(area * aspect)))
    top, left = int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1))
    x = x[top : top + ch, left : left + cw]
    contrast = 1 + jitter * (2 * u[4] - 1)
    brightness = jitter * (2 * torch.rand(1, generator=generator).item() - 1)
    x = (x - 0.5) * contrast + 0.5 + brightness
    return to_model_input(x, size)
