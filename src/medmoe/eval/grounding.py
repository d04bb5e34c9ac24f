"""Grounding: does a phrase's map over the image land on what the phrase names? (docs/design.md §10)

A phrase (a finding's name in its report, a prompt such as "pneumonia", an MS-CXR phrase) is read within
its text; the text's router picks the expert (Sec. 4.3) and the phrase's words are mapped over that
expert's local map, their maps averaged:

* the attention map: the local loss's word attention over the regions (``config.attention``, Sec. 4.4);
* the similarity map: the cosine of each word and each region (what BioViL's CNR is computed on).

Both are resized bilinearly to the model's view of the image and scored against the finding's mask
(MedSynth, BUSI) or boxes (RSNA, MS-CXR; mapped through the same resize and centre crop):

* pointing game: the attention map's peak lies inside the mask;
* attention in mask: the share of the attention map's mass inside the mask;
* CNR (BioViL, Boecking et al., ECCV 2022): |mean inside - mean outside| / sqrt(var inside + var outside)
  of the similarity map.

Each sits beside a uniform map, which scores the mask's share of the image on the first two and 0 on CNR.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from ..data.io import load_image
from ..data.manifest import Row
from ..data.transforms import ImageTransform, to_model_view
from ..errors import ImageLoadError
from ..losses import word_attention

STOP_WORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "in", "is", "it", "its", "no", "not",
    "of", "on", "or", "that", "the", "there", "this", "to", "was", "with", "without",
})
PUBLISHED_CNR = {"BioViL": 1.14, "GLoRIA": 0.93}  # MS-CXR phrase grounding, Boecking et al. (ECCV 2022), Table 5


def content_words(tokens: list[str]) -> list[int]:
    """Indices of the words that carry meaning: not stop words, with a letter or digit."""
    return [i for i, t in enumerate(tokens) if t.lower() not in STOP_WORDS and any(c.isalnum() for c in t)]


def find_phrase(tokens: list[str], phrase: str) -> list[int] | None:
    """The content words of the first occurrence of ``phrase``'s words, in order, among ``tokens`` ("kidney
    stone" in "a 4 mm kidney stone in the left kidney"); None when the text does not contain it."""
    name = re.findall(r"\w+", phrase.lower())
    lower = [t.lower() for t in tokens]
    for start in range(len(lower) - len(name) + 1):
        if name and lower[start : start + len(name)] == name:
            return [i for i in content_words(tokens) if start <= i < start + len(name)]
    return None


def phrase_words(tokens: list[str], phrase: str | None = None) -> list[int]:
    """The words of the text that a map is of: ``phrase``'s (``find_phrase``), else every content word of
    the text (a prompt, or a phrase given as the whole text)."""
    span = find_phrase(tokens, phrase) if phrase else None
    return content_words(tokens) if span is None else span


@torch.no_grad()
def report_attention(model, images: torch.Tensor, texts: list[str], expert: torch.Tensor | None = None):
    """With a text at hand its router picks the expert (unless ``expert`` [B] is given). Returns (ImageOutput,
    TextOutput, attention [B, N, G, G]): each word's attention over its own image (``config.attention``)."""
    model.eval()
    text = model.encode_text(texts)
    if expert is None and text.router_logits is not None:
        expert = text.router_logits.argmax(1)
    image = model.encode_image(images, expert)
    c = model.config
    return image, text, word_attention(image.local_map, text.words, text.lengths, c.temp1, c.attention)


def word_similarity(local_map: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Cosine of each word [N, D] and each region of one local map [D, G, G]: [N, G, G]."""
    d, g, _ = local_map.shape
    return (F.normalize(words.float(), dim=-1) @ F.normalize(local_map.float().reshape(d, -1), dim=0)).view(-1, g, g)


def box_mask(boxes: list, height: int, width: int, frame: list | None = None) -> np.ndarray:
    """The union of ``boxes`` ([x, y, width, height] in pixels of ``frame`` = [width, height], default the
    image's own) as a bool [height, width] mask of the image."""
    sx, sy = (1.0, 1.0) if not frame else (width / float(frame[0]), height / float(frame[1]))
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h in boxes:
        x0, y0 = max(0, int(np.floor(x * sx))), max(0, int(np.floor(y * sy)))
        x1, y1 = min(width, int(np.ceil((x + w) * sx))), min(height, int(np.ceil((y + h) * sy)))
        mask[y0:y1, x0:x1] = True
    return mask


def cnr(values: torch.Tensor, mask: torch.Tensor) -> float:
    """BioViL's contrast-to-noise ratio of a map against a mask (same shape): |mean inside - mean outside|
    / sqrt(var inside + var outside), variances over the pixels (ddof 0); 0 for a flat map."""
    inside, outside = values[mask].double(), values[~mask].double()
    noise = float((inside.var(unbiased=False) + outside.var(unbiased=False)).sqrt())
    return abs(float(inside.mean() - outside.mean())) / noise if noise > 0 else 0.0


def case_scores(attention: torch.Tensor, similarity: torch.Tensor, mask: torch.Tensor) -> tuple[float, ...]:
    """(pointing hit, attention mass in mask, CNR, mask area share) of one phrase's maps [G, G] against a
    bool mask [S, S] of the model's view."""
    size = mask.shape
    att, sim = (F.interpolate(m[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
                for m in (attention, similarity))
    att = att.clamp(min=0)
    mass = float(att[mask].sum() / att.sum()) if float(att.sum()) > 0 else float(mask.float().mean())
    return float(mask.flatten()[att.argmax()]), mass, cnr(sim, mask), float(mask.float().mean())


def _target(row: Row, image: np.ndarray, size: int) -> torch.Tensor:
    """The row's finding as a bool mask of the model's view: its mask file, else its boxes."""
    if row.mask is not None:
        return to_model_view(load_image(row.mask), size) > 0.5
    full = box_mask(row.boxes, image.shape[0], image.shape[1], row.box_size)
    return to_model_view(full.astype(np.float32), size) > 0.5


def has_target(row: Row) -> bool:
    """Whether the row marks its finding: a mask file or boxes."""
    return row.mask is not None or bool(row.boxes)


def grounding_scores(model, rows: list[Row], text: str | None = None, batch_size: int = 32) -> dict:
    """Pointing game, attention in the mask and CNR over the rows that mark their finding (mask or boxes),
    overall and per group (dataset, else modality), each beside a uniform map. The phrase is each row's
    ``phrase`` (MS-CXR), else its finding (its first label), within its report, or the report's content
    words when it names neither (``phrase_words``); with ``text`` (RSNA's "pneumonia"), that text stands for
    every row's report.
    Rows whose image or mask cannot be read are counted in ``skipped``."""
    transform = ImageTransform.of(model.config)
    cases = [r for r in rows if has_target(r)]
    per: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    skipped = 0
    for start in range(0, len(cases), batch_size):
        batch, images, masks = [], [], []
        for r in cases[start : start + batch_size]:
            try:
                image = transform.load(r.image)
                target = _target(r, image, transform.size)
            except (ImageLoadError, ValueError, OSError):
                skipped += 1
                continue
            if not target.any():
                skipped += 1
                continue
            batch.append(r)
            images.append(transform(image))
            masks.append(target)
        if not batch:
            continue
        texts = [text or r.report for r in batch]
        image_out, text_out, attention = report_attention(model, torch.stack(images), texts)
        for b, r in enumerate(batch):
            n = int(text_out.lengths[b])
            words = phrase_words(text_out.tokens[b], r.phrase or (r.labels[0] if r.labels else None))
            if not words:
                skipped += 1
                continue
            similarity = word_similarity(image_out.local_map[b], text_out.words[b, :n])
            per[r.group or "unknown"].append(case_scores(attention[b, words].mean(0), similarity[words].mean(0),
                                                         masks[b]))
    return {**summarise([v for vs in per.values() for v in vs]), "skipped": skipped,
            "per_modality": {m: summarise(v) for m, v in sorted(per.items())}}


def summarise(values: list[tuple[float, ...]]) -> dict:
    """Means of ``case_scores`` tuples, with the uniform map's scores."""
    if not values:
        return {"n": 0}
    hit, mass, contrast, area = np.array(values).mean(0)
    return {"pointing_game": float(hit), "attention_in_mask": float(mass), "cnr": float(contrast),
            "uniform_pointing_game": float(area), "uniform_attention_in_mask": float(area), "n": len(values)}


def initial_model(model):
    """The same architecture at initialisation, and where it comes from: the weights the model's training
    run started from (its model_config.json and seed, built as the trainer built them), else the model's
    own configuration built with seed 0 (its pretrained parts, if any, then at random too)."""
    from ..config import MedMoEConfig
    from ..hub import find_run
    from ..model.medmoe import MedMoE
    from ..runs import initial_state

    state = initial_state(find_run(getattr(model, "source", None)))
    if state is not None:
        config, seed, source = MedMoEConfig.from_dict(state[0]), state[1], f"the training run's start (seed {state[1]})"
    else:
        config, seed, source = model.config, 0, "the model's configuration, seed 0 (no training run found)"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MedMoE(config, model.text.tokenizer_source).eval(), source


def format_grounding(result: dict) -> str:
    """The grounding table ``medmoe eval grounding`` prints: each score for the model, at initialisation
    (when measured) and for a uniform map, overall and per group."""
    init = result.get("init", {})
    columns = [("pointing game", "pointing_game"), ("attention in mask", "attention_in_mask"), ("CNR", "cnr")]
    header = f"{'':<12}" + "".join(f"{name + (' (init, uniform)' if key != 'cnr' else ' (init)'):>36}"
                                   for name, key in columns) + f"{'n':>7}"
    lines = [header]
    groups = [("all", result, init), *((g, r, init.get("per_modality", {}).get(g, {}))
                                      for g, r in result.get("per_modality", {}).items())]
    for label, r, start in groups:
        cells = []
        for _, key in columns:
            if key not in r:
                cells.append(f"{'-':>36}")
                continue
            extra = [f"{start[key]:.3f}" if key in start else "-"]
            if key != "cnr":
                extra.append(f"{r['uniform_' + key]:.3f}")
            cells.append(f"{r[key]:.3f} ({', '.join(extra)})".rjust(36))
        lines.append(f"{label:<12}" + "".join(cells) + f"{r.get('n', 0):>7}")
    if result.get("init_source"):
        lines.append(f"init: {result['init_source']}")
    return "\n".join(lines)
