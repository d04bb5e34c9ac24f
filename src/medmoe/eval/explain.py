"""Word maps over an image, in the style of the paper's Figure 3: what the words a user asks about point at.

MedMoE (arXiv 2506.08356), Figure 3, shows a medical image next to the attention maps of single report
words, overlaid on the image, with the expert the router chose. ``explain`` draws that picture for an
image file and its report: one panel per word or phrase, each the word attention (``config.attention``)
over the routed expert's map, resized to the image and overlaid at the size the image is shown. The
words are the user's (``words``); by default the report's findings (``finding_words``: the names of the
findings medmoe's prompt sets know, where the report affirms them), else its most peaked words. A word
the report does not contain is read on its own, as a prompt, over the same expert's map. With a mask (a
MedSynth or BUSI finding) its outline is drawn and each panel says whether the map's peak lands in it.

matplotlib is imported inside ``explain_figure``, so importing this module stays light; the figure is a
``matplotlib.figure.Figure`` (no pyplot state, the caller's backend untouched).
"""
from __future__ import annotations

import json
import math
import re
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.io import load_image
from ..data.transforms import ImageTransform, to_model_view
from .grounding import content_words, find_phrase, report_attention

PANEL_PIXELS = 448  # each panel's side in the figure: the map drawn at the size the image is shown
DPI = 112
MAX_COLUMNS = 3
NEGATION_CUES = frozenset({"no", "not", "without", "negative", "free", "resolved", "absent"})
NOT_FINDINGS = frozenset({"normal", "benign", "malignant"})  # class names that name no finding
ANATOMY_PROMPTS = frozenset({"medimeta-ct.json"})  # prompt sets whose classes are organs, not findings
# CheXpert's observations (MS-CXR's categories among them) and common findings no prompt set names
OTHER_FINDINGS = ("lung opacity", "lung lesion", "enlarged cardiomediastinum", "pneumothorax", "fracture", "nodule",
                  "mass", "lesion", "tumour", "tumor", "haemorrhage", "hemorrhage", "infarct", "calcification",
                  "aneurysm", "stenosis", "thrombus", "abscess", "fibrosis", "emphysema")


@cache
def finding_names() -> tuple[tuple[str, ...], ...]:
    """The findings medmoe knows by name, as word tuples, longest first: the classes of its prompt sets
    (MediMeTA's organs and normal/benign/malignant aside) and ``OTHER_FINDINGS``: ("pleural", "effusion"),
    ("kidney", "stone"), ..., ("effusion",)."""
    files = [resources.files("medmoe") / "data" / "medsynth_prompts.json",
             *(f for f in (resources.files("medmoe") / "data" / "prompts").iterdir()
               if f.name.endswith(".json") and f.name not in ANATOMY_PROMPTS)]
    classes = [c for f in files for group in json.loads(f.read_text())["classes"].values() for c in group]
    names = {tuple(re.findall(r"[a-z]+", c.lower())) for c in [*classes, *OTHER_FINDINGS]}
    return tuple(sorted((n for n in names if n and " ".join(n) not in NOT_FINDINGS), key=lambda n: (-len(n), n)))


def affirmed(report: str) -> list[tuple[str, bool]]:
    """The report's words in order, each with whether it is affirmed: not after a negation cue ("no",
    "without", "negative for", ...) in its sentence."""
    words = []
    for sentence in re.split(r"[.;:!?\n]+", report):
        negated = False
        for word in re.findall(r"\w+", sentence):
            negated = negated or word.lower() in NEGATION_CUES
            words.append((word, not negated))
    return words


def finding_words(tokens: list[str], report: str) -> list[list[int]]:
    """The findings the report affirms, each as the indices of its words among ``tokens`` (the report's
    words as the encoder reads them): "pleural effusion" in "Small left pleural effusion.", nothing in
    "No effusion."; each finding once, at its first affirmed mention."""
    flags, k = [], 0
    raw = affirmed(report)
    for token in tokens:  # the tokens are the report's words in order, some dropped (GLoRIA's cleaning)
        while k < len(raw) and raw[k][0].lower() != token.lower():
            k += 1
        flags.append(k < len(raw) and raw[k][1])
        k += k < len(raw)
    lower = [t.lower() for t in tokens]
    spans, taken = {}, set()
    for name in finding_names():
        for start in range(len(lower) - len(name) + 1):
            span = range(start, start + len(name))
            if tuple(lower[start : start + len(name)]) == name and all(flags[i] for i in span) and not taken & set(span):
                spans.setdefault(name, list(span))
                taken |= set(span)
    return sorted(spans.values())


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
    for i in sorted(content_words(tokens), key=lambda i: -peaks[i]):  # sorted() is stable
        word = tokens[i].lower()
        if word in seen:
            continue
        seen.add(word)
        chosen.append(i)
        if len(chosen) == max_words:
            break
    return chosen


def _as_maps(attention) -> np.ndarray:
    """[N, G, G] attention (numpy or torch, any device) as a float numpy array."""
    maps = torch.as_tensor(attention).detach().float().cpu().numpy()
    if maps.ndim != 3:
        raise ValueError(f"attention must be [N, G, G], got shape {tuple(maps.shape)}")
    return maps


def upsample(attention_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One [G, G] map resized bilinearly to ``size`` = (H, W)."""
    grid = torch.as_tensor(attention_map, dtype=torch.float32)[None, None]
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _title(title: str | None, expert) -> str:
    parts = [title] if title else []
    if expert is not None:
        parts.append(f"routed to expert {expert}" if isinstance(expert, (int, np.integer)) else f"routed to {expert}")
    return " | ".join(parts)


def explain_figure(image, panels: list[tuple[str, np.ndarray]], out, expert=None, title: str | None = None,
                   mask=None, note: str | None = None) -> Path:
    """Write a PNG of ``image`` and one panel per (label, map [G, G]) of ``panels``; returns its path.

    ``image``: grey [H, W] or colour [H, W, 3] float array in [0, 1] (as ``medmoe.data.io.load_image``
    returns it, resized/cropped to the model's view); normalised model inputs are not accepted. Each map is
    resized to the image and overlaid on its own colour scale, each panel ``PANEL_PIXELS`` wide whatever the
    image's size (a small image is shown enlarged, not as a thumbnail). ``mask`` [H, W] bool: the finding's
    outline, drawn on every panel, each panel then saying whether its peak is inside. ``expert``: routed
    expert (an int prints as "expert 2", a str as given), or None; ``note``: a line under the title.
    """
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype=np.float32)
    if not (image.ndim == 2 or image.shape[2:] == (3,)):
        raise ValueError(f"image must be a grey [H, W] or colour [H, W, 3] array, got shape {image.shape}")
    mask = None if mask is None else np.asarray(mask, dtype=bool)
    count = 1 + len(panels)
    cols = min(count, MAX_COLUMNS)
    rows = math.ceil(count / cols)
    side = PANEL_PIXELS / DPI
    fig = Figure(figsize=(side * cols, side * rows + 0.5 + 0.25 * bool(note)), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("image")
    for ax, (label, grid) in zip(axes[1:], panels):
        up = upsample(np.asarray(grid, dtype=np.float32), image.shape[:2])
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.imshow(up, cmap="jet", alpha=0.45, interpolation="bilinear")
        ax.set_title(label)
        caption = f"max {float(np.max(grid)):.3f}"
        if mask is not None and mask.any():
            caption += ", peak in the finding" if mask.flat[int(up.argmax())] else ", peak outside the finding"
        ax.set_xlabel(caption, fontsize=9)
    for ax in axes[:count]:
        if mask is not None and mask.any():
            ax.contour(mask, levels=[0.5], colors="white", linewidths=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[count:]:
        ax.axis("off")
    heading = _title(title, expert)
    if heading or note:
        fig.suptitle("\n".join(t for t in (heading, note) if t), fontsize=11)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, bbox_inches="tight")
    return out


@torch.no_grad()
def word_maps(model, image: torch.Tensor, report: str, words: list[str] | None = None, expert: int | None = None):
    """(panels [(label, map [G, G])], expert or None, note) for one model input [3, S, S] and its report (or
    a prompt). The report's router picks the expert unless ``expert`` is given (the image router's choice).

    ``words``: the words or phrases to map; one the report contains is read in the report (the maps of its
    words averaged), one it does not is read on its own, over the same expert's map. By default the
    report's affirmed findings, else its 4 most peaked words (the note says which)."""
    routed, text, attention = report_attention(model, image[None], [report],
                                               None if expert is None else torch.tensor([expert]))
    tokens, n = text.tokens[0], int(text.lengths[0])
    expert = int(routed.expert[0]) if routed.router_logits is not None else None
    note = None
    if words is None:
        found = finding_words(tokens, report)
        if not found:
            found = [[i] for i in rank_words(tokens, attention[0, :n], max_words=4)]
            note = "the report names no finding medmoe knows: its most peaked words"
        return [(" ".join(tokens[i] for i in span), attention[0, span].mean(0)) for span in found], expert, note
    panels, alone = [], []
    for phrase in words:
        span = find_phrase(tokens, phrase)
        panels.append((phrase, attention[0, span].mean(0) if span else None))
        if not span:
            alone.append(phrase)
    if alone:  # read on their own: their words' attention over the report's expert's map
        from ..losses import word_attention

        own = model.encode_text(alone)
        maps = word_attention(routed.local_map.expand(len(alone), -1, -1, -1), own.words, own.lengths,
                              model.config.temp1, model.config.attention)
        read = {p: maps[k, content_words(own.tokens[k]) or [0]].mean(0) for k, p in enumerate(alone)}
        panels = [(label, grid if grid is not None else read[label]) for label, grid in panels]
        note = "read on its own (not in the report): " + ", ".join(alone)
    return panels, expert, note


def explain(model, image_path, report: str, out, title: str | None = None, words: list[str] | None = None,
            mask=None):
    """Figure 3 for one image file and its report: the maps of ``words`` (default: the report's findings)
    over the image, the expert the report router chose named; ``mask`` (a mask file) outlines the finding.
    Returns (png path, expert or None)."""
    transform = ImageTransform.of(model.config)
    image = transform.load(image_path)
    panels, expert, note = word_maps(model, transform(image), report, words)
    view = to_model_view(image, transform.size)  # [S, S] grey, [3, S, S] colour
    outline = None if mask is None else (to_model_view(load_image(mask), transform.size) > 0.5).numpy()
    png = explain_figure((view if view.ndim == 2 else view.movedim(0, -1)).numpy(),
                         [(label, grid.float().cpu().numpy()) for label, grid in panels], out, expert=expert,
                         title=title, mask=outline, note=note)
    return png, expert
