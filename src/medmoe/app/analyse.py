"""What the page shows for one upload: the image as loaded (DICOM windowed), class probabilities (from
the prompts of the typed class names or, for a model fine-tuned by ``medmoe finetune`` given no class
names, from its trained head; ``probability_source`` says which), the image router's expert and
probabilities (experts named by their modalities only when training saw modality labels,
``trained_with_modalities``), the report router's expert, and word maps: the attention of the words the
user asks about (default: the report's affirmed findings, or without a report the most probable class's
name, read as a prompt over the image router's expert), each as a colour overlay the size of the image
as loaded, which the page lays over the image at whatever size it is shown."""
from __future__ import annotations

import base64
import io

import numpy as np
import torch

from ..classify import classify, expert_modalities, has_head, model_input, routing
from ..data.transforms import ImageTransform
from ..errors import ConfigError, ImageLoadError
from ..hub import find_run
from ..runs import training_data

MAX_UPLOAD = 200 * 1024 * 1024  # bytes


OVERLAY_PIXELS = 1024  # the longest side of a word map's overlay (the page scales it with the image)


def png_base64(image: np.ndarray) -> str:
    """A grey [H, W], colour [H, W, 3] or colour-with-alpha [H, W, 4] image in [0, 1] as a base64 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def map_overlay(grid: torch.Tensor, shape: tuple[int, int], size: int) -> np.ndarray:
    """A word map [G, G] over the model's view (``size``: the image's shorter side resized to it, centre
    cropped) as an RGBA overlay [h, w, 4] of the whole image of ``shape`` (at most ``OVERLAY_PIXELS`` on its
    longest side): "jet" colours, more opaque where the map is higher, clear outside the crop."""
    import matplotlib

    height, width = shape
    factor = min(1.0, OVERLAY_PIXELS / max(height, width))
    side = min(height, width)  # the crop, in the image's pixels
    h, w, crop = round(height * factor), round(width * factor), max(1, round(side * factor))
    top, left = round((height - side) / 2 * factor), round((width - side) / 2 * factor)
    up = torch.nn.functional.interpolate(grid.float()[None, None], size=(crop, crop), mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    up = (up - up.min()) / max(float(up.max() - up.min()), 1e-12)
    overlay = np.zeros((h, w, 4), dtype=np.float32)
    colours = matplotlib.colormaps["jet"](up)
    colours[..., 3] = 0.15 + 0.6 * up
    overlay[top : top + crop, left : left + crop] = colours[: h - top, : w - left]
    return overlay


def trained_with_modalities(model) -> bool:
    """Whether the model's training saw modality labels, so that ``expert_modalities`` (the modalities
    the auxiliary loss and label routing train each expert towards) means something: its training run
    (found beside the model folder) records in ``data.json`` a known modality for some training rows.
    A folder without its run (copied, downloaded from the Hub, never trained) or a run trained without a
    modality column counts as not, and the page names its experts "expert k" alone."""
    record = training_data(find_run(getattr(model, "source", None)))
    return record is not None and any(m != "unknown" and n for m, n in record["per_modality"].items())


def analyse(model, data: bytes, name: str, classes: list[str], report: str = "", words: list[str] | None = None) -> dict:
    """The page's result for an uploaded file's bytes; raises ImageLoadError or ConfigError with
    the message the page shows. ``words``: what to map (default: the report's findings)."""
    from ..eval.explain import word_maps

    if len(data) > MAX_UPLOAD:
        raise ImageLoadError(f"{name}: {len(data) / 2**20:.0f} MB is over the {MAX_UPLOAD // 2**20} MB upload limit")
    if not data:
        raise ImageLoadError(f"{name}: the file is empty")
    classes, report = [c.strip() for c in classes if c.strip()], report.strip()
    head = has_head(model)
    if not classes and not report and not head and not any(w.strip() for w in words or []):
        raise ConfigError("type at least two class names, a report, or words to map")
    image = ImageTransform.of(model.config).load_bytes(data, name)
    result = {"name": name, "image": png_base64(image), "size": list(image.shape[:2])}
    x = model_input(model, image)[None]
    if classes or head:  # typed class names: zero-shot from their prompts; none: the fine-tuned head
        found = classify(model, x, classes or None)
        result["probabilities"] = dict(zip(found.classes, found.probabilities[0].tolist()))
        result["probability_source"] = found.source
        result["multi_label"] = found.multi_label
        expert, router = found.expert, found.router_probabilities
    else:
        with torch.no_grad():
            expert, router, _ = routing(model, model.encode_image(x))
    if expert is not None:
        assigned = expert_modalities(model) if trained_with_modalities(model) else {}
        result["expert"] = int(expert[0])
        result["router"] = [{"expert": k, "probability": p, "modalities": assigned.get(k, [])}
                            for k, p in enumerate(router[0].tolist())]
    words = [w.strip() for w in words or [] if w.strip()] or None
    prompt = max(result["probabilities"], key=result["probabilities"].get) \
        if result.get("probability_source") == "prompts" else None
    text = report or prompt or (words and " ".join(words))
    if text:  # with a report, its router's expert; else the image router's, as zero-shot reads the image
        panels, map_expert, note = word_maps(model, x[0], text, words or (None if report else [text]),
                                             None if report or expert is None else int(expert[0]))
        size = ImageTransform.of(model.config).size
        result["maps"] = [{"label": label, "overlay": png_base64(map_overlay(grid, image.shape[:2], size)),
                           "peak": float(grid.max()), "uniform": 1.0 / grid.numel()} for label, grid in panels]
        result["maps_of"] = "the report" if report else f"the prompt '{text}'"
        result["maps_note"] = note
        if report:
            result["report_expert"] = map_expert
    return result
