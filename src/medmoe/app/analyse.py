"""What the page shows for one upload: the image as loaded (DICOM windowed), class probabilities (from
the prompts of the typed class names or, for a model fine-tuned by ``medmoe finetune`` given no class
names, from its trained head; ``probability_source`` says which), the image router's expert and
probabilities (experts named by their modalities only when training saw modality labels,
``trained_with_modalities``), the report router's expert and the report words' attention overlaid."""
from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..classify import classify, expert_modalities, has_head, model_input, routing
from ..data.transforms import ImageTransform
from ..errors import ConfigError, ImageLoadError
from ..hub import find_run
from ..runs import training_data

MAX_UPLOAD = 200 * 1024 * 1024  # bytes


def png_base64(image: np.ndarray) -> str:
    """A grey [H, W] or colour [H, W, 3] image in [0, 1] as a base64 PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def trained_with_modalities(model) -> bool:
    """Whether the model's training saw modality labels, so that ``expert_modalities`` (the modalities
    the auxiliary loss and label routing train each expert towards) means something: its training run
    (found beside the model folder) records in ``data.json`` a known modality for some training rows.
    A folder without its run (copied, downloaded from the Hub, never trained) or a run trained without a
    modality column counts as not, and the page names its experts "expert k" alone."""
    record = training_data(find_run(getattr(model, "source", None)))
    return record is not None and any(m != "unknown" and n for m, n in record["per_modality"].items())


def analyse(model, data: bytes, name: str, classes: list[str], report: str = "") -> dict:
    """The page's result for an uploaded file's bytes; raises ImageLoadError or ConfigError with
    the message the page shows."""
    from ..eval.explain import explain

    if len(data) > MAX_UPLOAD:
        raise ImageLoadError(f"{name}: {len(data) / 2**20:.0f} MB is over the {MAX_UPLOAD // 2**20} MB upload limit")
    if not data:
        raise ImageLoadError(f"{name}: the file is empty")
    classes, report = [c.strip() for c in classes if c.strip()], report.strip()
    head = has_head(model)
    if not classes and not report and not head:
        raise ConfigError("type at least two class names, a report, or both")
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
    if report:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload"  # explain reads a file; the format is recognised by content
            path.write_bytes(data)
            png, result["report_expert"] = explain(model, path, report, Path(tmp) / "attention.png", title=name)
            result["attention"] = base64.b64encode(png.read_bytes()).decode()
    return result
