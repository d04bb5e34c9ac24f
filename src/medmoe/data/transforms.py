"""Image in [0, 1] -> model input [3, S, S], in plain torch (no torchvision).

A grey image [H, W] is replicated to 3 channels; a colour one [H, W, 3] (``load_image`` under
``colour="rgb"``) keeps its channels. ``ImageTransform.of(config)`` is what a model's config says
about its input (size, colour policy, normalisation statistics): the dataset, the shards, the
evaluation and ``explain`` all build model input through it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import IMAGENET_MEAN, IMAGENET_STD
from .io import load_image, load_image_bytes


def to_model_view(image: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """What the model sees, before normalisation: shorter side resized to ``size`` (antialiased
    bilinear), centre-cropped: [size, size] for a grey image, [3, size, size] for a colour one.
    Also maps finding masks onto the model's view."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float32))
    colour = x.ndim == 3
    x = x.permute(2, 0, 1)[None] if colour else x[None, None]
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    x = x[:, top : top + size, left : left + size].clamp(0, 1)
    return x if colour else x[0]


def to_model_input(image: np.ndarray | torch.Tensor, size: int, mean: tuple = IMAGENET_MEAN,
                   std: tuple = IMAGENET_STD) -> torch.Tensor:
    """``to_model_view``, grey -> 3 channels, normalised by per-channel ``mean``/``std``: [3, size, size]."""
    x = to_model_view(image, size)
    if x.ndim == 2:
        x = x.expand(3, -1, -1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def augment(image: np.ndarray, size: int, generator: torch.Generator, scale: tuple[float, float] = (0.7, 1.0),
            jitter: float = 0.1, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD) -> torch.Tensor:
    """Train-time view of a grey [H, W] or colour [H, W, 3] image: random resized crop (70-100 % of
    the area, aspect 3:4-4:3) and a small brightness/contrast jitter, the same for every channel.
    No flips (reports say left and right) and no hue or colour tricks."""
    x = torch.as_tensor(image, dtype=torch.float32)
    h, w = x.shape[:2]
    u = torch.rand(5, generator=generator).tolist()
    area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
    aspect = math.exp(math.log(3 / 4) + math.log(16 / 9) * u[1])
    ch, cw = min(h, round(math.sqrt(area / aspect))), min(w, round(math.sqrt(area * aspect)))
    top, left = int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1))
    x = x[top : top + ch, left : left + cw]
    contrast = 1 + jitter * (2 * u[4] - 1)
    brightness = jitter * (2 * torch.rand(1, generator=generator).item() - 1)
    x = (x - 0.5) * contrast + 0.5 + brightness
    return to_model_input(x, size, mean, std)


# a reduced decode keeps the shorter side >= 1.25 x the input size: a training crop (>= 70 % of the area,
# so >= 84 % of the side) still shrinks to the input rather than being enlarged
DRAFT_MARGIN = 1.25


@dataclass(frozen=True)
class ImageTransform:
    """How image files become a model's input: ``size`` pixels square, read under the ``colour``
    policy (``gray`` | ``rgb``), normalised by ``mean``/``std`` (3 values each)."""

    size: int
    colour: str = "gray"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    @classmethod
    def of(cls, config) -> "ImageTransform":
        """The input a model with MedMoEConfig ``config`` expects."""
        return cls(config.image_size, config.colour, tuple(config.image_mean), tuple(config.image_std))

    def load(self, path: str | Path, slice_index: int | None = None, reduced: bool = False) -> np.ndarray:
        """The image file as ``load_image`` reads it; ``reduced``: only as large as the model's input needs (a
        big JPEG decodes at 1/2 to 1/8 of its size, its shorter side still ``DRAFT_MARGIN`` x ``size``)."""
        return load_image(path, slice_index, self.colour, self._min_side(reduced))

    def load_bytes(self, data: bytes, name: str, slice_index: int | None = None, reduced: bool = False) -> np.ndarray:
        return load_image_bytes(data, name, slice_index, self.colour, self._min_side(reduced))

    def _min_side(self, reduced: bool) -> int | None:
        return math.ceil(DRAFT_MARGIN * self.size) if reduced else None

    def __call__(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Evaluation input [3, size, size] of a loaded image."""
        return to_model_input(image, self.size, self.mean, self.std)

    def augment(self, image: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """Training input [3, size, size] of a loaded image (``augment``)."""
        return augment(image, self.size, generator, mean=self.mean, std=self.std)
