"""Modality from the image itself: a small classifier trained on the rows a manifest already labels
with confidence (given, DICOM tag, report text), used on the rows the text leaves unknown and to
question the text where the image disagrees.

Features (``image_features``): the image as grey, downsampled to 32 x 32 (1,024 values: the
layout a modality has — a chest film's lungs and mediastinum, a CT's round body in black air, an
ultrasound fan, a fundus disc), plus intensity statistics (percentiles, a 16-bin histogram, the
share of black and white pixels, edge energy, aspect ratio) and colour statistics (channel means
and spreads, saturation: fundus photographs are red, H&E slides pink and purple). The classifier
is a standardised multinomial logistic regression (scikit-learn). On CPU, 10k images take seconds
to fit; decoding the images dominates. Its accuracy on the labelled rows is measured out of fold
(2-fold cross-validation), and those out-of-fold probabilities are the ones compared with the text,
so a row never votes on itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIDE = 32  # thumbnail side
MIN_ROWS_PER_CLASS = 5  # a modality with fewer labelled rows is not learnt (and never predicted)


def image_features(path) -> np.ndarray:
    """A fixed-length feature vector of one image file (any format ``load_image`` reads)."""
    from PIL import Image

    from .io import load_image

    image = load_image(path, colour="rgb")
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    grey = rgb.mean(axis=2).astype(np.float32)
    thumb = np.asarray(Image.fromarray(grey, mode="F").resize((SIDE, SIDE), Image.BILINEAR), dtype=np.float32)
    hist = np.histogram(grey, bins=16, range=(0.0, 1.0))[0] / grey.size
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    stats = [grey.mean(), grey.std(), *np.percentile(grey, [1, 5, 25, 50, 75, 95, 99]), (grey < 0.02).mean(),
             (grey > 0.98).mean(), np.abs(np.diff(thumb, axis=0)).mean(), np.abs(np.diff(thumb, axis=1)).mean(),
             np.log(grey.shape[1] / grey.shape[0]), *rgb.mean(axis=(0, 1)), *rgb.std(axis=(0, 1)),
             saturation.mean(), (saturation > 0.1).mean()]
    return np.concatenate([thumb.ravel(), hist, np.asarray(stats, dtype=np.float32)]).astype(np.float32)


@dataclass
class ImageVotes:
    """Per-row probabilities of the image classifier (rows it was given), and how it was measured."""
    classes: list[str]
    probabilities: np.ndarray  # [n, classes]: out of fold for training rows, from the full fit for the others
    cv_accuracy: float | None  # out-of-fold accuracy on the training rows
    trained_on: dict[str, int]  # labelled rows per modality


def image_votes(features: np.ndarray, labels: list[str | None], seed: int = 0) -> ImageVotes | None:
    """Fit on the rows with a label (``labels[i]`` not None) and give every row its probabilities;
    None when fewer than two modalities have ``MIN_ROWS_PER_CLASS`` labelled rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = {m: labels.count(m) for m in sorted({m for m in labels if m is not None})}
    classes = [m for m, n in counts.items() if n >= MIN_ROWS_PER_CLASS]
    if len(classes) < 2:
        return None
    train = np.array([m in classes for m in labels])
    y = np.array([classes.index(m) for m in labels if m in classes])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    probabilities = np.zeros((len(labels), len(classes)))
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    probabilities[train] = cross_val_predict(model, features[train], y, cv=folds, method="predict_proba")
    model.fit(features[train], y)
    if (~train).any():
        probabilities[~train] = model.predict_proba(features[~train])
    accuracy = float((probabilities[train].argmax(1) == y).mean())
    return ImageVotes(classes, probabilities, round(accuracy, 4), {m: counts[m] for m in classes})
