"""The MedMoE model (paper Figure 2), top to bottom.

image -> Swin pyramid F1..F4 -> gate (image router on pooled F4) -> routed expert -> V_local [D, G, G]
       -> pooled V_local (global_source="expert") or pooled F4 ("backbone") -> linear -> v_g [D]
report -> BERT (sum of last 4 layers, words merged) -> words T [N, D], t_g [D] -> gate (report router)

Each step is explained in ``docs/design.md`` (§1 pyramid, §2 experts, §3 gate, §4 text, §6 v_g).

The gate (``gate.py``) owns both routers, the modality table and the routing policy: in training
``config.routing`` picks the router that drives dispatch (the report's, by default); without a
report (``encode_image``) the image router decides. ``MedMoE.forward`` returns what ``MedMoELoss``
takes, the ``Route`` included (its logits and target feed the auxiliary loss, Sec. 4.5).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import MedMoEConfig
from ..files import atomic_write, atomic_write_text
from ..runs import latest_checkpoint
from .backbone import SwinPyramid
from .experts import Expert, ExpertMixture
from .gate import Gate, Route, Router
from .text import TextEncoder, Tokens

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR = "config.json", "model.safetensors", "tokenizer"


@dataclass
class ImageOutput:
    global_emb: torch.Tensor  # v_g [B, D]
    local_map: torch.Tensor  # V_local [B, D, G, G]
    expert: torch.Tensor  # k* [B]
    router_logits: torch.Tensor | None  # image-side router [B, K]; None without experts


@dataclass
class TextOutput:
    global_emb: torch.Tensor  # t_g [B, D]
    words: torch.Tensor  # T [B, N, D], zero past each report's length
    lengths: torch.Tensor  # [B]
    tokens: list | None  # the merged words of each report (None when encoded from Tokens)
    router_logits: torch.Tensor | None  # report-side router [B, K]; None without experts


class ImageEncoder(nn.Module):
    """The image side but its router: backbone, experts (or one static head), global projection.

    The global embedding v_g (the paper leaves its source open; docs/design.md §6) is the projected mean
    of the routed expert's local map (``global_source="expert"``, so the routing shapes zero-shot,
    retrieval and probing) or of the final Swin stage F4 (``"backbone"``, the measured default).
    """

    def __init__(self, config: MedMoEConfig):
        super().__init__()
        c = config
        self.pyramid_indices = [level - 1 for level in c.scales]  # config.scales (levels 1..4) as list indices
        self.from_expert = c.global_source == "expert"
        self.backbone = SwinPyramid(c.image_size, c.swin, pretrained=c.backbone)
        final = self.backbone.channels[-1]
        channels = [self.backbone.channels[i] for i in self.pyramid_indices]
        self.global_proj = nn.Linear(c.embed_dim if self.from_expert else final, c.embed_dim)
        if c.moe:
            self.experts = ExpertMixture(c.num_experts, channels, c.embed_dim, c.grid_size, c.scale_attn_dim,
                                         shared=c.shared_expert)
        else:
            self.head = Expert(channels, c.embed_dim, c.grid_size, c.scale_attn_dim)

    def features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The pyramid levels the experts fuse, and the pooled final feature (F4)."""
        pyramid = self.backbone(images)
        return [pyramid[i] for i in self.pyramid_indices], pyramid[-1].mean(dim=(2, 3))

    def global_embedding(self, pooled: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """v_g [B, D] from the pooled F4 [B, C_4] or the local map [B, D, G, G] (``global_source``)."""
        return self.global_proj(local.mean(dim=(2, 3)) if self.from_expert else pooled)

    def encode(self, pyramid: list[torch.Tensor], pooled: torch.Tensor, route: Route | None) -> ImageOutput:
        """The local map and v_g of features routed by ``route`` (None: the static head)."""
        if route is None:
            local = self.head(pyramid)
            zeros = torch.zeros(pooled.shape[0], dtype=torch.long, device=pooled.device)
            return ImageOutput(self.global_embedding(pooled, local), local, zeros, None)
        local = self.experts(pyramid, route.expert, route.weights)
        return ImageOutput(self.global_embedding(pooled, local), local, route.expert, route.image_logits)


def encode_image(image: ImageEncoder, gate: Gate | None, images: torch.Tensor, expert: torch.Tensor | None = None,
                 expert_weights: torch.Tensor | None = None) -> ImageOutput:
    """``MedMoE.encode_image`` from the image side and the gate alone (what the ONNX image graph holds)."""
    pyramid, pooled = image.features(images)
    route = gate(pooled) if gate is not None else None
    if route is not None and expert_weights is not None:
        route.weights, route.expert = expert_weights, expert_weights.argmax(dim=1)
    elif route is not None and expert is not None and route.weights is None:
        route.expert = expert.to(pooled.device)
    return image.encode(pyramid, pooled, route)


def encode_image_all_experts(image: ImageEncoder, gate: Gate, images: torch.Tensor):
    """(v_g [B, D] of the image router's choice, every expert's map [K, B, D, G, G], the Route): what the
    authors' code computes. A reference for tests, FLOPs, benchmarks and the ONNX graph."""
    pyramid, pooled = image.features(images)
    route = gate(pooled)
    every = image.experts.forward_all(pyramid)
    chosen = every[route.expert, torch.arange(images.shape[0], device=images.device)]
    return image.global_embedding(pooled, chosen), every, route


def head_input(global_emb: torch.Tensor, local_map: torch.Tensor, features: str) -> torch.Tensor:
    """What a classification head reads of ``encode_image``'s output: v_g (``"global"``) or the routed
    expert's pooled local map (``"local"``)."""
    return local_map.mean(dim=(2, 3)) if features == "local" else global_emb


def head_probabilities(logits: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """A head's logits [B, C] as probabilities: one sigmoid per class (multi-label), else a softmax."""
    return logits.float().sigmoid() if multi_label else logits.float().softmax(dim=1)


class MedMoE(nn.Module):
    def __init__(self, config: MedMoEConfig, tokenizer: str | os.PathLike | None = None):
        """``tokenizer``: a folder with the tokenizer files (default: the text model's own)."""
        super().__init__()
        self.config = config
        built = dataclasses.replace(config, backbone=None, text_pretrained=False) if config.init else config
        self.image = ImageEncoder(built)
        # built in this order (image side, image router, text side, report router), so that a seed gives
        # the same initial weights as it always has
        image_router = Router.of(config, self.image.backbone.channels[-1]) if config.moe else None
        self.text = TextEncoder(built, tokenizer and str(tokenizer))
        self.gate = Gate(config, image_router, Router.of(config, config.embed_dim)) if config.moe else None
        self.head = nn.Linear(config.embed_dim, len(config.head_classes)) if config.head_classes else None
        if config.init:  # the init's weights replace the backbone's and the text encoder's
            from .init import load_init

            load_init(self, config.init)

    # ----------------------------------------------------------------------------- encoders
    def encode_image(self, images: torch.Tensor, expert: torch.Tensor | None = None,
                     expert_weights: torch.Tensor | None = None) -> ImageOutput:
        """Images [B, 3, H, W] (see ``medmoe.data.transforms``), routed by the image router.
        ``expert`` [B] forces hard routing; ``expert_weights`` [B, K] set the mixture of the
        ``soft-moe`` variant."""
        return encode_image(self.image, self.gate, images, expert, expert_weights)

    def encode_image_all_experts(self, images: torch.Tensor):
        """Every expert on every image (``encode_image_all_experts``)."""
        return encode_image_all_experts(self.image, self.gate, images)

    def encode_text(self, reports: list[str] | Tokens) -> TextOutput:
        """Reports as strings (tokenised here; ``tokens`` then holds each report's merged words) or
        as ``Tokens`` from the data pipeline."""
        merged = None
        if not isinstance(reports, Tokens):
            reports, merged = self.text.tokenize.merged_words(list(reports))
        global_emb, words, lengths = self.text(reports)
        logits = self.gate.text_router(global_emb) if self.gate is not None else None
        return TextOutput(global_emb, words, lengths, merged, logits)

    def forward(self, images: torch.Tensor, reports: list[str] | Tokens, modality: torch.Tensor | None = None) -> dict:
        """Training forward, routed by ``config.routing``; ``modality`` [B]: indices into
        ``config.modalities``, -1 unknown. Returns ``MedMoELoss``'s inputs."""
        text = self.text(reports if isinstance(reports, Tokens) else self.text.tokenize(list(reports)))
        pyramid, pooled = self.image.features(images)
        route = self.gate(pooled, text[0], modality) if self.gate is not None else None
        image = self.image.encode(pyramid, pooled, route)
        return {"image_global": image.global_emb, "text_global": text[0], "regions": image.local_map,
                "words": text[1], "lengths": text[2], "route": route}

    def head_logits(self, image: ImageOutput) -> torch.Tensor:
        """The classification head's logits [B, C] (``config.head_classes``) of ``encode_image``'s output:
        on v_g (``head_features="global"``) or on the routed expert's pooled local map (``"local"``)."""
        if self.head is None:
            raise ValueError("this model has no classification head (train one with `medmoe finetune`)")
        return self.head(head_input(image.global_emb, image.local_map, self.config.head_features))

    def head_probabilities(self, image: ImageOutput) -> torch.Tensor:
        """The head's probabilities [B, C]: one sigmoid per class (``head_multi_label``), else a softmax."""
        return head_probabilities(self.head_logits(image), self.config.head_multi_label)

    def towers(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The image tower (image encoder, image router, classification head) and the text tower (text encoder,
        report router)."""
        image_router, text_router = (self.gate.image_router, self.gate.text_router) if self.gate is not None \
            else (None, None)
        return ([m for m in (self.image, image_router, self.head) if m is not None],
                [m for m in (self.text, text_router) if m is not None])

    @torch.no_grad()
    def upcycle(self) -> None:
        """Copy expert 0 into all K experts and route to all of them from now on (sparse upcycling)."""
        self.image.experts.replicate(0)
        self.gate.upcycled.fill_(True)

    def sync_batchnorm(self) -> "MedMoE":
        """Batch norm of the experts (or the static head) over the global batch of all ranks
        (``medmoe.distributed.SyncBatchNorm2d``); the state dict keeps its keys."""
        from ..distributed import convert_sync_batchnorm

        convert_sync_batchnorm(getattr(self.image, "experts", None) or self.image.head)
        return self

    # ------------------------------------------------------------------------- persistence
    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json``, ``model.safetensors`` and the tokenizer; each file atomically."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict() | {
            "backbone": None, "init": None, "swin": self.image.backbone.architecture(),
            "text_pretrained": False, "text": self.text.architecture(),
        }
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        atomic_write_text(folder / CONFIG_FILE, json.dumps(config, indent=2))
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            self.text.tokenizer.save_pretrained(tmp)
            for f in Path(tmp).iterdir():
                (folder / TOKENIZER_DIR).mkdir(exist_ok=True)
                os.replace(f, folder / TOKENIZER_DIR / f.name)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, map_location: str = "cpu") -> "MedMoE":
        """Load a folder written by ``save_pretrained``, or the newest checkpoint of a training run."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file() and latest_checkpoint(folder) is not None:
            folder = latest_checkpoint(folder) / "model"
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not a medmoe model folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}) "
                                    "nor a training run with a checkpoint")
        saved = json.loads((folder / CONFIG_FILE).read_text())
        saved.setdefault("global_source", "backbone")  # folders written before the option existed
        saved.setdefault("attention", "gloria")  # folders written before the option existed
        config = MedMoEConfig.from_dict(saved)
        model = cls(config, folder / TOKENIZER_DIR if (folder / TOKENIZER_DIR).is_dir() else None)
        model.load_state_dict(_upgrade(load_file(folder / WEIGHTS_FILE, device=map_location), model))
        model.source = folder  # where it was read from: push_to_hub finds the training run beside it
        return model.eval()

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload the model with a model card to the Hugging Face Hub (``medmoe.hub.push_to_hub``)."""
        from ..hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


def _upgrade(state: dict, model: MedMoE) -> dict:
    """Weights saved before the gate held the routers: their old names, and no upcycling flag."""
    renamed = {"image.router.": "gate.image_router.", "text_router.": "gate.text_router."}
    for old, new in renamed.items():
        state = {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}
    if model.gate is not None and "gate.upcycled" not in state:
        state["gate.upcycled"] = torch.tensor(True)
    return state


def create_model(preset: str = "tiny", **overrides) -> MedMoE:
    """``create_model("tiny", num_experts=2)``: a fresh model from a preset plus overrides."""
    from ..config import load_config

    return MedMoE(load_config(preset, **overrides))


HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def load(name_or_path: str | os.PathLike, map_location: str = "cpu", compile: bool = False) -> MedMoE:
    """A model folder, a training run (its newest checkpoint) or a Hugging Face Hub id ``org/name``
    (downloaded once into the Hub cache, then read from there; offline with ``HF_HUB_OFFLINE=1``).
    ``compile``: ``torch.compile`` its backbone and text encoder (``model/compile.py``)."""
    path = Path(name_or_path)
    if not path.exists() and HUB_ID.match(str(name_or_path)):
        from ..hub import download

        path = download(str(name_or_path))
    model = MedMoE.from_pretrained(path, map_location=map_location)
    if compile:
        from .compile import compile_model

        compile_model(model)
    return model
