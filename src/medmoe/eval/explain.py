"""Word-level attention maps over an image, in the style of the paper's Figure 3.

MedMoE (arXiv 2506.08356), Figure 3, shows a medical image next to the attention maps of
single report words, overlaid on the image, with the expert the router chose. ``explain_figure``
draws the same picture for one image: the image alone, then one panel per word for the words
whose attention is most peaked (highest maximum over the grid), each map upsampled
bilinearly to the image size and overlaid with the "jet" colormap. ``explain`` draws it for an
image file and its report, with the attention of the expert the report router chose.

matplotlib is imported inside ``explain_figure``, so importing this module stays light; the figure is a
``matplotlib.figure.Figure`` (no pyplot state, the caller's backend untouched).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.transforms import ImageTransform, to_model_view
from .grounding import report_attention

STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "in", "is", "it", "its", "no", "not",
    "of", "on", "or", "that", "the", "there", "this", "to", "was", "with", "without",
})
PANEL_INCHES = 2.4
MAX_COLUMNS = 5


def _as_maps(attention) -> np.ndarray:
    """[N, G, G] attention (numpy or torch, any device) as a float numpy array."""
    maps = torch.as_tensor(attention).detach().float().cpu().numpy()
    if maps.ndim != 3:
        raise ValueError(f"attention must be [N, G, G], got shape {tuple(maps.shape)}")
    return maps


def rank_words(tokens: list[str], attention, max_words: int = 8) -> list[int]:
    """Indices of up to ``max_words`` words, most peaked attention (highest map maximum) first.

    Stop words and tokens without a letter or digit are skipped; a word that occurs several
    times keeps only its most peaked occurrence. Equal peaks keep report order.
    """
    maps = _as_maps(attention)
    if len(tokens) != len(maps):
        raise ValueError(f"{len(tokens)} tokens but {len(maps)} attention maps")
    peaks = maps.reshape(len(maps), -1).max(axis=1)
    chosen, seen = [], set()
    for i in sorted(range(len(tokens)), key=lambda i: -peaks[i]):  # sorted() is stable
        word = tokens[i].lower()
        if word in STOP_WORDS or word in seen or not any(c.isalnum() for c in word):
            continue
        seen.add(word)
        chosen.append(i)
        if len(chosen) == max_words:
            break
    return chosen


def upsample(attention_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One [G, G] map resized bilinearly to ``size`` = (H, W)."""
    grid = torch.as_tensor(attention_map, dtype=torch.float32)[None, None]
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _title(title: str | None, expert) -> str:
    parts = [title] if title else []
    if expert is not None:
        parts.append(f"routed to expert {expert}" if isinstance(expert, (int, np.integer)) else f"routed to {expert}")
    return " | ".join(parts)


def explain_figure(image, tokens: list[str], attention, out, expert=None, title: str | None = None,
                   max_words: int = 8) -> Path:
    """Write a PNG of ``image`` with the attention maps of its most peaked words; returns its path.

    ``image``: grey [H, W] or colour [H, W, 3] float array in [0, 1] (as ``medmoe.data.io.load_image``
    returns it, resized/cropped to the model's view); normalised model inputs are not accepted.
    ``tokens``: the report's words; ``attention``: [len(tokens), G, G], each map summing to 1.
    ``expert``: routed expert (an int prints as "expert 2", a str as given), or None.
    Each overlay is coloured on its own scale; the panel's x-label gives the map's maximum.
    """
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype=np.float32)
    if not (image.ndim == 2 or image.shape[2:] == (3,)):
        raise ValueError(f"image must be a grey [H, W] or colour [H, W, 3] array, got shape {image.shape}")
    maps = _as_maps(attention)
    words = rank_words(tokens, maps, max_words)

    panels = 1 + len(words)
    cols = min(panels, MAX_COLUMNS)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    axes = axes.ravel()
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image")
    for ax, i in zip(axes[1:], words):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.imshow(upsample(maps[i], image.shape[:2]), cmap="jet", alpha=0.45)
        ax.set_title(tokens[i])
        ax.set_xlabel(f"max {maps[i].max():.3f}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[panels:]:
        ax.axis("off")
    heading = _title(title, expert)
    if heading:
        fig.suptitle(heading)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    return out


def explain(model, image_path, report: str, out, title: str | None = None):
    """Figure 3 for one image file and its report: each word's attention overlaid, the expert the
    report router chose named. Returns (png path, expert or None)."""
    transform = ImageTransform.of(model.config)
    image = transform.load(image_path)
    routed, text, attention = report_attention(model, transform(image)[None], [report])
    expert = int(routed.expert[0]) if routed.router_logits is not None else None
    view = to_model_view(image, transform.size)  # [S, S] grey, [3, S, S] colour
    png = explain_figure((view if view.ndim == 2 else view.movedim(0, -1)).numpy(), text.tokens[0],
                         attention[0, : int(text.lengths[0])], out, expert=expert, title=title)
    return png, expert
