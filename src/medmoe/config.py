"""Model configuration: a preset, a variant and a recipe from the registry (``registry.py``), plus
overrides.

``load_config("tiny", num_experts=2)`` and ``--set num_experts=2`` on the command line go
through the same code, so every field below is settable from Python and from the CLI; a field
declared with ``option`` is also a command-line switch of ``medmoe train`` (``--freeze-text``).
The design behind the fields is in ``docs/design.md``; the comments below cite its sections (§N).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from . import registry
from .errors import ConfigError
from .options import option

COLOURS = ("gray", "rgb")  # colour policies (data/io.py)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what ImageNet-pretrained Swin weights expect: the default normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
MEDCLIP_MEAN, MEDCLIP_STD = 0.5862785803043838, 0.27950088968644304  # MedCLIP's constants.py, on grey x 3 channels

ATTENTIONS = ("gloria", "cosine")  # the word attention over regions (losses._region_weights; docs/design.md §10)
LOCAL_AGGS = ("sum", "mean")  # the local loss's word aggregation: log sum_n exp or log mean_n exp (losses.py)
ROUTINGS = ("text", "label", "image")  # which router drives dispatch in training (model/gate.py; docs/design.md §3)
EXPERT_INITS = ("random", "upcycle")  # how the K experts start (model/gate.py; docs/design.md §9)
HEAD_FEATURES = ("global", "local")  # what a fine-tuned classification head reads (model/medmoe.py)


def modality_index(modalities: list[str], name: str | None) -> int:
    """The index of modality ``name`` in a config's ``modalities``, -1 for unknown or missing."""
    return modalities.index(name) if name in modalities else -1


@dataclass
class MedMoEConfig:
    # image side (docs/design.md §1 pyramid, §2 experts, §3 routing, §6 v_g, §9 expert options)
    image_size: int = 224
    colour: str = "gray"  # gray: every image as one grey channel (replicated to 3); rgb: colour images keep R, G, B
    image_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # input normalisation per channel:
    image_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))  # ImageNet's, or MedCLIP's under an init
    init: str | None = None  # "medclip:PATH": Swin and text weights from a MedCLIP checkpoint (model/init.py, §8)
    swin: dict = field(default_factory=dict)  # transformers.SwinConfig kwargs (the architecture)
    backbone: str | None = None  # hub id or local dir with pretrained Swin weights; None = random init
    embed_dim: int = 768  # shared width D of global and local embeddings
    grid: int | None = None  # expert output grid G (None: the finest pyramid level, H/4)
    num_experts: int = 6  # K
    moe: bool = True  # False: one static multi-scale head and no router (baseline)
    dispatch: str = "top1"  # top1: hard routing (the paper); soft: all experts weighted by the router
    scales: list[int] = field(default_factory=lambda: [1, 2, 3, 4])  # pyramid levels the experts fuse
    scale_attn_dim: int = 96  # hidden width of each expert's cross-scale attention scorer
    router_hidden: int = 256  # hidden width of W1 in alpha = softmax(W2 ReLU(W1 t))
    routing: str = "text"  # which router drives dispatch in training: text | label (the oracle) | image (§3)
    shared_expert: bool = False  # an always-on expert beside the routed one, maps added (DeepSeekMoE; §9)
    detach_routers: bool = False  # routers read detached features: the auxiliary loss trains them, not the encoders
    expert_init: str = "random"  # random, or upcycle: one expert until upcycle_step, then copied K times
    upcycle_step: int = 0  # the training step of the upcycling split (sparse upcycling, Komatsuzaki et al.)
    # v_g from the pooled F4, or "expert": the routed expert's pooled map (docs/design.md §6); the default
    # is measured (benchmarks/RESULTS.md, "MedMoE vs static"): with zero-shot scoring "both" it scores best
    global_source: str = "backbone"
    modalities: list[str] = field(default_factory=lambda: ["xray", "ct", "mri", "ultrasound"])
    # text side (docs/design.md §4)
    text_model: str = "emilyalsentzer/Bio_ClinicalBERT"  # hub id, local dir, or "minilm"
    text_pretrained: bool = False  # load text weights from text_model (else: architecture only)
    text: dict = field(default_factory=dict)  # transformers config overrides for the text encoder
    max_length: int = 64  # word-piece tokens per report
    text_last_n_layers: int = 4  # GLoRIA: sum of the last 4 hidden layers
    freeze_text: bool = option(False, "keep the text encoder's weights fixed")
    text_clean: str = "none"  # "gloria": lower-case, ASCII, sentences of >= 3 words (GLoRIA's report cleaning)
    # losses (docs/design.md §5; GLoRIA defaults)
    # the word attention over regions (docs/design.md §10): cosine, softmax over regions of temp1 x cos(word,
    # region), the measured default; gloria, GLoRIA's code (softmax over words, x temp1, softmax over regions)
    attention: str = "cosine"
    temp1: float = 10.0  # the attention's temperature (cosine: x the cosine; GLoRIA's 4: x the softmax over words)
    temp2: float = 5.0
    temp3: float = 10.0
    local_agg: str = "sum"
    w_global: float = 1.0
    w_local: float = 1.0
    w_aux: float = 1.0  # lambda in L_total = L_global + L_local + lambda * L_aux (Sec. 4.6)
    # a classification head on the image side, trained by `medmoe finetune` on a user's labels (none when empty)
    head_classes: list[str] = field(default_factory=list)
    head_multi_label: bool = False  # one sigmoid per class (several labels per image) instead of a softmax
    head_features: str = "global"  # what the head reads: v_g ("global") or the routed expert's pooled map ("local")

    def __post_init__(self):
        hints = _field_types(type(self))
        for f in dataclasses.fields(self):
            if not _matches(getattr(self, f.name), hints[f.name]):
                raise ConfigError(f"config field {f.name!r} must be {f.type} (got {getattr(self, f.name)!r})")
        if self.routing not in ROUTINGS:
            raise ConfigError(f"routing must be one of {', '.join(ROUTINGS)} (got {self.routing!r})")
        if self.expert_init not in EXPERT_INITS:
            raise ConfigError(f"expert_init must be one of {', '.join(EXPERT_INITS)} (got {self.expert_init!r})")
        if self.head_features not in HEAD_FEATURES:
            raise ConfigError(f"head_features must be one of {', '.join(HEAD_FEATURES)} (got {self.head_features!r})")
        if self.upcycle_step < 0:
            raise ConfigError(f"upcycle_step must be >= 0 (got {self.upcycle_step})")
        if self.global_source not in ("expert", "backbone"):
            raise ConfigError(f"global_source must be 'expert' or 'backbone' (got {self.global_source!r})")
        if self.dispatch not in ("top1", "soft"):
            raise ConfigError(f"dispatch must be 'top1' or 'soft' (got {self.dispatch!r})")
        if not self.scales or any(l not in (1, 2, 3, 4) for l in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ConfigError(f"scales must be distinct pyramid levels from 1..4 (got {self.scales!r})")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"attention must be one of {', '.join(ATTENTIONS)} (got {self.attention!r})")
        if self.local_agg not in LOCAL_AGGS:
            raise ConfigError(f"local_agg must be one of {', '.join(LOCAL_AGGS)} (got {self.local_agg!r})")
        if self.num_experts < 1:
            raise ConfigError(f"num_experts must be >= 1 (got {self.num_experts})")
        if self.image_size % 32:
            raise ConfigError(f"image_size must be a multiple of 32 (got {self.image_size})")
        if self.text_clean not in ("none", "gloria"):
            raise ConfigError(f"text_clean must be 'none' or 'gloria' (got {self.text_clean!r})")
        if self.colour not in COLOURS:
            raise ConfigError(f"colour must be one of {', '.join(COLOURS)} (got {self.colour!r})")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError(f"image_mean and image_std take 3 values, one per channel, std > 0 "
                              f"(got {self.image_mean!r}, {self.image_std!r})")
        if self.init is not None and not (self.init.startswith("medclip:") and self.init[len("medclip:"):]):
            raise ConfigError(f"init must be 'medclip:PATH' (got {self.init!r})")
        if self.init and (self.image_mean, self.image_std) == (list(IMAGENET_MEAN), list(IMAGENET_STD)):
            self.image_mean, self.image_std = [MEDCLIP_MEAN] * 3, [MEDCLIP_STD] * 3  # normalisation follows the init

    @property
    def grid_size(self) -> int:
        return self.grid or self.image_size // 4

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MedMoEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"_doc"})
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})


@functools.cache
def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _matches(value: Any, annotation: Any) -> bool:
    """``isinstance`` for annotations such as ``int | None``, ``list[int]``, ``dict[str, Any]``; a
    bool is no int, an int is a float (JSON writes 1.0 as 1)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if annotation in (int, float):
        return isinstance(value, (int, annotation)) and not isinstance(value, bool)
    return isinstance(value, annotation)


def variant_of(config: MedMoEConfig) -> str:
    """The name of the registered variant ``config`` is (``custom`` if none matches): every field that
    some variant sets must hold that variant's value, or the default."""
    variants = {name: registry.get("variants", name) for name in registry.names("variants")}
    keys = {k for overrides in variants.values() for k in overrides if k != "_doc"}
    defaults = MedMoEConfig()
    for name, overrides in variants.items():
        if all(getattr(config, k) == overrides.get(k, getattr(defaults, k)) for k in keys):
            return name
    return "custom"


def list_presets() -> list[str]:
    return registry.names("presets")


def load_config(preset: str = "tiny", variant: str = "medmoe", recipe: str = "default", **overrides: Any) -> MedMoEConfig:
    """Preset ``preset``, then the ``variant``'s settings, the ``recipe``'s model settings, then
    ``overrides`` (dict fields merge)."""
    data = registry.get("presets", preset)
    changes = {**registry.get("variants", variant), **registry.get("recipes", recipe).get("config", {}), **overrides}
    changes.pop("_doc", None)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return MedMoEConfig.from_dict(data)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["num_experts=2", "swin.embed_dim=32", "moe=false"]`` -> overrides for load_config.

    Values are parsed as JSON where possible (numbers, booleans, lists, null), else kept as
    strings; ``a.b=v`` sets key ``b`` of the dict field ``a``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (got {item!r})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if "." in key:
            outer, inner = key.split(".", 1)
            out.setdefault(outer, {})[inner] = value
        else:
            out[key] = value
    return out
