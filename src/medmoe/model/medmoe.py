"""The MedMoE model (paper Figure 2), top to bottom.

image -> Swin pyramid F1..F4 -> (image router on pooled F4) -> routed expert -> V_local [D, G, G]
       -> pooled V_local (global_source="expert") or pooled F4 ("backbone") -> linear -> v_g [D]
report -> BERT (sum of last 4 layers, words merged) -> words T [N, D], t_g [D] -> text router

Which router drives dispatch in training is ``config.routing`` (``text``: the paper's
report-conditioned routing; ``label``: the modality label; ``image``). Without a report
(``encode_image``) the image router decides. Both routers are trained by the auxiliary loss
(Sec. 4.5) against the expert assigned to each modality (``expert_targets``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import MedMoEConfig
from ..files import atomic_write, atomic_write_text
from ..runs import latest_checkpoint
from .backbone import SwinPyramid
from .experts import Expert, ExpertMixture, Router
from .text import TextEncoder

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
    tokens: list  # the merged words of each report
    router_logits: torch.Tensor | None  # report-side router [B, K]; None without experts


class ImageEncoder(nn.Module):
    """The image side counted in Table 3: backbone, experts, image router, global projection.

    The global embedding v_g (the paper leaves its source open; DESIGN 1.6) is the projected mean
    of the routed expert's local map (``global_source="expert"``, as the authors' code does, so the
    routing shapes zero-shot, retrieval and probing) or of the final Swin stage F4 (``"backbone"``).
    """

    def __init__(self, config: MedMoEConfig):
        super().__init__()
        c = config
        self.pyramid_indices = [level - 1 for level in c.scales]  # config.scales (levels 1..4) as list indices
        self.soft = c.dispatch == "soft"
        self.from_expert = c.global_source == "expert"
        self.backbone = SwinPyramid(c.image_size, c.swin, pretrained=c.backbone)
        final = self.backbone.channels[-1]
        channels = [self.backbone.channels[i] for i in self.pyramid_indices]
        self.global_proj = nn.Linear(c.embed_dim if self.from_expert else final, c.embed_dim)
        if c.moe:
            self.experts = ExpertMixture(c.num_experts, channels, c.embed_dim, c.grid_size, c.scale_attn_dim)
            self.router = Router(final, c.router_hidden, c.num_experts)
        else:
            self.head = Expert(channels, c.embed_dim, c.grid_size, c.scale_attn_dim)

    def features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The pyramid levels the experts fuse, and the pooled final feature (F4)."""
        pyramid = self.backbone(images)
        return [pyramid[i] for i in self.pyramid_indices], pyramid[-1].mean(dim=(2, 3))

    def global_embedding(self, pooled: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """v_g [B, D] from the pooled F4 [B, C_4] or the local map [B, D, G, G] (``global_source``)."""
        return self.global_proj(local.mean(dim=(2, 3)) if self.from_expert else pooled)

    def forward(self, images: torch.Tensor, expert: torch.Tensor | None = None,
                expert_weights: torch.Tensor | None = None) -> ImageOutput:
        """``expert`` [B] forces hard routing; ``expert_weights`` [B, K] are soft dispatch's mixing
        weights (default: the image router's probabilities)."""
        pyramid, pooled = self.features(images)
        if not hasattr(self, "experts"):
            local = self.head(pyramid)
            zeros = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
            return ImageOutput(self.global_embedding(pooled, local), local, zeros, None)
        logits = self.router(pooled)
        if self.soft:
            weights = logits.softmax(dim=1) if expert_weights is None else expert_weights
            local = torch.einsum("kbdhw,bk->bdhw", self.experts.forward_all(pyramid), weights)
            expert = weights.argmax(dim=1)
        else:
            expert = logits.argmax(dim=1) if expert is None else expert
            local = self.experts(pyramid, expert)
        return ImageOutput(self.global_embedding(pooled, local), local, expert, logits)

    def forward_all_experts(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(v_g [B, D] of the router's choice, every expert's map [K, B, D, G, G], router logits
        [B, K]): what the authors' code computes. A reference for tests, FLOPs and benchmarks."""
        pyramid, pooled = self.features(images)
        every, logits = self.experts.forward_all(pyramid), self.router(pooled)
        chosen = every[logits.argmax(dim=1), torch.arange(images.shape[0], device=images.device)]
        return self.global_embedding(pooled, chosen), every, logits


class MedMoE(nn.Module):
    def __init__(self, config: MedMoEConfig, tokenizer: str | os.PathLike | None = None):
        """``tokenizer``: a folder with the tokenizer files (default: the text model's own)."""
        super().__init__()
        self.config = config
        built = dataclasses.replace(config, backbone=None, text_pretrained=False) if config.init else config
        self.image = ImageEncoder(built)
        self.text = TextEncoder(built, tokenizer and str(tokenizer))
        self.text_router = Router(config.embed_dim, config.router_hidden, config.num_experts) if config.moe else None
        if config.init:  # the init's weights replace the backbone's and the text encoder's
            from .init import load_init

            load_init(self, config.init)

    # ----------------------------------------------------------------------------- encoders
    def encode_image(self, images: torch.Tensor, expert: torch.Tensor | None = None,
                     expert_weights: torch.Tensor | None = None) -> ImageOutput:
        """Images [B, 3, H, W] (see ``medmoe.data.transforms``). ``expert`` [B] forces the routing;
        ``expert_weights`` [B, K] set the mixture of the ``soft-moe`` variant."""
        return self.image(images, expert, expert_weights)

    def encode_text(self, reports: list[str]) -> TextOutput:
        global_emb, words, lengths, tokens = self.text(list(reports))
        logits = self.text_router(global_emb) if self.text_router is not None else None
        return TextOutput(global_emb, words, lengths, tokens, logits)

    def modality_index(self, names: list[str | None]) -> torch.Tensor:
        """Modality names -> indices into ``config.modalities`` (-1 for unknown or missing)."""
        known = {m: i for i, m in enumerate(self.config.modalities)}
        return torch.tensor([known.get(n, -1) for n in names], dtype=torch.long)

    def expert_targets(self, modality: torch.Tensor) -> torch.Tensor:
        """The expert each modality is assigned to (modality index mod K); -1 stays -1."""
        return torch.where(modality >= 0, modality % self.config.num_experts, modality)

    def forward(self, images: torch.Tensor, reports: list[str], modality: torch.Tensor | None = None):
        """Training forward: routes by ``config.routing``. Returns (ImageOutput, TextOutput)."""
        text = self.encode_text(reports)
        if self.text_router is None or self.config.routing == "image":
            return self.encode_image(images), text
        probs = text.router_logits.softmax(dim=1)  # soft dispatch learns the text router through these
        expert = probs.detach().argmax(dim=1)
        if self.config.routing == "label":
            if modality is None:
                raise ValueError("routing='label' needs modality labels")
            target = self.expert_targets(modality.to(expert.device))
            expert = torch.where(target >= 0, target, expert)  # unknown modality: the report decides
            probs = torch.nn.functional.one_hot(expert, self.config.num_experts).to(probs.dtype)
        return self.encode_image(images, expert, probs if self.config.dispatch == "soft" else None), text

    def sync_batchnorm(self) -> "MedMoE":
        """Batch norm of the experts (or the static head) over the global batch of all ranks
        (``medmoe.distributed.SyncBatchNorm2d``); the state dict keeps its keys."""
        from ..distributed import convert_sync_batchnorm

        convert_sync_batchnorm(getattr(self.image, "experts", None) or self.image.head)
        if hasattr(self.image, "experts"):
            self.image.experts.every_expert = True
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
        config = MedMoEConfig.from_dict(saved)
        model = cls(config, folder / TOKENIZER_DIR if (folder / TOKENIZER_DIR).is_dir() else None)
        model.load_state_dict(load_file(folder / WEIGHTS_FILE, device=map_location))
        model.source = folder  # where it was read from: push_to_hub finds the training run beside it
        return model.eval()

    # ------------------------------------------------------------------ using a trained model
    def classify(self, images, classes, templates: list[str] | None = None):
        """Zero-shot class probabilities and routed experts of image files or tensors
        (``medmoe.classify.classify``)."""
        from ..classify import classify

        return classify(self, images, classes, templates)

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload the model with a model card to the Hugging Face Hub (``medmoe.hub.push_to_hub``)."""
        from ..hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


def create_model(preset: str = "tiny", **overrides) -> MedMoE:
    """``create_model("tiny", num_experts=2)``: a fresh model from a preset plus overrides."""
    from ..config import load_config

    return MedMoE(load_config(preset, **overrides))
