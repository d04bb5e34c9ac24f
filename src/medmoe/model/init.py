"""Initialisation from a MedCLIP checkpoint: ``init="medclip:PATH"`` (paper Section 5.1).

MedCLIP (Wang et al. 2022, github.com/RyanWangZf/MedCLIP), ``MedCLIPModel`` with
``MedCLIPVisionModelViT``, saves one ``pytorch_model.bin`` holding

* ``vision_model.model.*``: a transformers ``SwinModel`` (swin-tiny-patch4-window7-224),
* ``vision_model.projection_head.*``, ``text_model.projection_head.*``, ``logit_scale`` (not used:
  our projections and temperatures are our own),
* ``text_model.model.*``: a transformers ``BertModel`` (Bio_ClinicalBERT).

The Swin weights go into the backbone (``transformers.SwinBackbone``, which holds a ``SwinModel``;
its per-stage ``hidden_states_norms`` are not in MedCLIP and keep their initialisation), the BERT
weights into the text encoder (which has no pooler). Both go through transformers' own loader, so
checkpoints written by older transformers versions (``attention.self.query``, ...) load too. Input
normalisation follows the initialisation: ``MedMoEConfig`` switches to MedCLIP's statistics.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)
PARTS = {"image": "vision_model.model.", "text": "text_model.model."}  # our part -> MedCLIP's key prefix
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def load_init(model: nn.Module, spec: str) -> dict[str, dict[str, list[str]]]:
    """Load ``spec`` (``"medclip:PATH"``) into a MedMoE's backbone and text encoder. Returns, per
    part, the model's ``missing`` keys (kept as initialised) and the checkpoint's ``unexpected`` ones."""
    path = Path(spec.removeprefix("medclip:"))
    state = read_weights(path)
    parts = {"image": model.image.backbone.swin, "text": model.text.encoder}
    if not any(k.startswith(PARTS["image"]) for k in state) or not any(k.startswith(PARTS["text"]) for k in state):
        raise ConfigError(f"init: {path} is not a MedCLIP checkpoint (no {PARTS['image']}* and {PARTS['text']}* "
                          f"weights; found e.g. {', '.join(sorted(state)[:3]) or 'nothing'})")
    report = {}
    for part, module in parts.items():
        prefix = PARTS[part]
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        report[part] = _load_part(module, weights, f"{path}: {part} ({prefix}*)")
        log.warning("init %s: %s from %s*: %d missing (kept as initialised)%s, %d unexpected (ignored)%s", path, part,
                    prefix, len(report[part]["missing"]), _listed(report[part]["missing"]),
                    len(report[part]["unexpected"]), _listed(report[part]["unexpected"]))
    return report


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` or PyTorch ``.bin`` file (read with ``weights_only=True``: never unpickled),
    or a folder holding ``model.safetensors`` or ``pytorch_model.bin``."""
    if path.is_dir():
        found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"init: {path} holds neither of {', '.join(WEIGHT_FILES)}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"init: {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a weights file, or a pickle holding more than tensors
        raise ConfigError(f"init: cannot read {path} as a weights file ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"init: {path} does not hold a state dict of tensors")
    return state


def _load_part(module, weights: dict[str, torch.Tensor], name: str) -> dict[str, list[str]]:
    """Copy ``weights`` (a transformers model's state dict, any naming transformers converts) into
    ``module`` (a transformers model of the same kind); shapes must match its configuration."""
    no_pooler = {"add_pooling_layer": False} if getattr(module, "pooler", ...) is None else {}  # as the text encoder
    loaded, info = type(module).from_pretrained(None, config=module.config, state_dict=weights, output_loading_info=True,
                                                ignore_mismatched_sizes=True, **no_pooler)
    if info["mismatched_keys"]:
        key, theirs, ours = sorted(info["mismatched_keys"], key=str)[0]
        raise ConfigError(f"init {name}: {key} has shape {tuple(theirs)} in the checkpoint but {tuple(ours)} in the "
                          "configured model; set the architecture (swin / text) to the checkpoint's")
    missing = set(info["missing_keys"])
    module.load_state_dict({k: v for k, v in loaded.state_dict().items() if k not in missing}, strict=False)
    return {"missing": sorted(missing), "unexpected": sorted(info["unexpected_keys"])}


def _listed(keys: list[str], n: int = 4) -> str:
    return f" [{', '.join(keys[:n])}{', ...' if len(keys) > n else ''}]" if keys else ""
