"""Modality from the image itself: a small CNN trained on the rows a manifest already labels with
confidence (given, DICOM tag, report text), used on the rows the text leaves unknown and to question
the text where the image disagrees.

Each image becomes a 64 x 64 RGB thumbnail (``image_thumbnail``: colour tells fundus photographs and
H&E slides apart, layout and texture the grey modalities). The network is four stride-2 conv-BN-ReLU
blocks (16-32-64-128 channels), global average pooling and a linear layer: translation-tolerant, so
a body part off-centre, zoomed or cropped as in a figure still reads as its modality. Batches are
class-balanced and augmented (shift, zoom, flip, brightness and contrast). Training is 2-fold: each
labelled row gets the probabilities of the model that never saw it (out of fold, so a row never
votes on itself), every other row the mean of both models. The probabilities are then
temperature-scaled on the out-of-fold rows, so that they match how often the image agrees with the
labels: text errors among them make the image humbler, never surer (leaving the worst-fitting rows
out of the fit, as likely text errors, let the image's own confident errors override good text
labels). On CPU, 10k thumbnails train in a few minutes (one thread of a busy 2-core machine: about
3 ms per thumbnail and pass).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..seeding import derive_seed

SIDE = 64  # thumbnail side
MIN_ROWS_PER_CLASS = 5  # a modality with fewer labelled rows is not learnt (and never predicted)
BATCH = 64  # (or the training rows, when fewer)
EPOCHS = 6  # passes over each fold's training half ...
MIN_STEPS, MAX_STEPS = 40, 500  # ... within these many optimiser steps
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))


def image_thumbnail(path) -> np.ndarray:
    """uint8 [3, SIDE, SIDE]: the image file (any format ``load_image`` reads) as an RGB thumbnail."""
    from PIL import Image

    from .io import load_image

    image = load_image(path, colour="rgb")
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    pixels = (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8)
    return np.asarray(Image.fromarray(pixels).resize((SIDE, SIDE), Image.BILINEAR)).transpose(2, 0, 1).copy()


@dataclass
class ImageVotes:
    """Per-row probabilities of the image classifier (rows it was given), and how it was measured."""
    classes: list[str]
    probabilities: np.ndarray  # [n, classes]: out of fold for training rows, both folds' mean for the others
    cv_accuracy: float | None  # out-of-fold accuracy on the training rows
    trained_on: dict[str, int]  # labelled rows per modality
    temperature: float  # the calibrating temperature of the logits


def _network(classes: int) -> nn.Module:
    layers, width = [], 3
    for out, kernel in ((16, 5), (32, 3), (64, 3), (128, 3)):
        layers += [nn.Conv2d(width, out, kernel, stride=2, padding=kernel // 2, bias=False), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True)]
        width = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(width, classes))


def _inputs(thumbnails: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(thumbnails).float() - 127.5) / 64.0


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random zoom (0.8-1.1), shift (up to 10 %), horizontal flip, brightness and contrast, per image."""
    n = x.shape[0]
    uniform = torch.rand(n, 6, generator=generator)
    scale = 0.8 + 0.3 * uniform[:, 0]
    flip = torch.where(uniform[:, 1] < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * flip, scale
    theta[:, :, 2] = (uniform[:, 2:4] - 0.5) * 0.2
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    contrast, brightness = 0.8 + 0.4 * uniform[:, 4], (uniform[:, 5] - 0.5) * 0.4
    return x * contrast.view(n, 1, 1, 1) + brightness.view(n, 1, 1, 1)


def _train(x: torch.Tensor, y: torch.Tensor, classes: int, seed: int) -> nn.Module:
    """A network fitted on (x, y) with class-balanced, augmented batches."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = _network(classes)
    batch = min(BATCH, len(y))
    steps = int(np.clip(EPOCHS * len(y) // batch, MIN_STEPS, MAX_STEPS))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
    weights = (1.0 / torch.bincount(y, minlength=classes).float())[y]
    model.train()
    for _ in range(steps):
        rows = torch.multinomial(weights, batch, replacement=True, generator=generator)
        loss = nn.functional.cross_entropy(model(_augment(x[rows], generator)), y[rows], label_smoothing=0.05)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The logits of ``x``, averaged with those of its mirror image."""
    out = [(model(chunk) + model(chunk.flip(3))) / 2 for chunk in x.split(512)]
    return torch.cat(out) if out else torch.zeros(0, model[-1].out_features)


def _temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature of ``TEMPERATURES`` whose softmax gives ``y`` the least negative log-likelihood."""
    def nll(t):
        z = logits / t
        z = z - z.max(1, keepdims=True)
        return float((np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]).mean())
    return float(min(TEMPERATURES, key=nll))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def image_votes(thumbnails: np.ndarray, labels: list[str | None], seed: int = 0) -> ImageVotes | None:
    """Fit on the rows with a label (``labels[i]`` not None) and give every row its probabilities;
    None when fewer than two modalities have ``MIN_ROWS_PER_CLASS`` labelled rows."""
    from sklearn.model_selection import StratifiedKFold

    counts = {m: labels.count(m) for m in sorted({m for m in labels if m is not None})}
    classes = [m for m, n in counts.items() if n >= MIN_ROWS_PER_CLASS]
    if len(classes) < 2:
        return None
    train = np.array([m in classes for m in labels])
    y = np.array([classes.index(m) for m in labels if m in classes])
    x = _inputs(thumbnails)
    x_train, x_other = x[torch.from_numpy(train)], x[torch.from_numpy(~train)]
    logits = np.zeros((len(labels), len(classes)), dtype=np.float32)
    out_of_fold = np.zeros((len(y), len(classes)), dtype=np.float32)
    other = np.zeros((int((~train).sum()), len(classes)), dtype=np.float32)
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed % 2**32)
    for fold, (fit, held) in enumerate(folds.split(np.zeros(len(y)), y)):
        model = _train(x_train[fit], torch.from_numpy(y[fit]), len(classes), derive_seed(seed, "image_modality", fold))
        out_of_fold[held] = _logits(model, x_train[held]).numpy()
        other += _logits(model, x_other).numpy() / 2
    logits[train], logits[~train] = out_of_fold, other
    temperature = _temperature(out_of_fold, y)
    accuracy = float((out_of_fold.argmax(1) == y).mean())
    return ImageVotes(classes, _softmax(logits / temperature), round(accuracy, 4), {m: counts[m] for m in classes},
                      round(temperature, 3))
