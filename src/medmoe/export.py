"""ONNX export for deployment without PyTorch's model code: ``medmoe export --model M --out DIR``.

    DIR/image_encoder.onnx   images [B, 3, S, S] float32 -> global_emb [B, D], local_map [B, D, G, G], expert [B]
                             (+ probabilities [B, C] for a model with a fine-tuned head, ``medmoe finetune``)
    DIR/text_encoder.onnx    input_ids, attention_mask, word_ids [B, T] int64 -> global_emb [B, D], words [B, T, D]
    DIR/tokenizer/           the model's tokenizer;  DIR/config.json  the model's configuration

**Routing in the image graph.** PyTorch groups the batch by the routed expert, so each image runs
through its own expert only; the group sizes depend on the data, which the exporter cannot trace
(an empty group also trips batch norm's shape checks). The graph instead runs every expert on
every image and gathers each image's routed map (``encode_image_all_experts``): exactly
the same outputs, one graph, one runtime call, at the cost of K experts instead of one (for the
``paper`` preset 23.7 instead of 7.6 GMACs per image, ``medmoe flops``). The alternative, one graph
per expert plus a router graph stitched by a Python wrapper, keeps the cost of one expert but
needs that wrapper in every deployment language. The ``soft-moe`` variant's graph mixes all experts
by the router's weights as it does in PyTorch; the ``static`` baseline has one head (expert 0).

**A fine-tuned head** (``config.head_classes``) is part of the image graph: its fourth output,
``probabilities``, is what ``HeadClassifier`` returns (a softmax over the classes, or a sigmoid per class
for a multi-label head); ``config.json`` names the classes in order.

**Word pieces to words.** The text encoder sums a word's pieces into one word embedding, which
needs each piece's word (the tokenizer's ``word_ids``); the graph takes them as a third input
and returns the words in slots 0..T-1, zero past each report's word count (``max(word_ids) + 1``).
``OnnxTextEncoder`` does the tokenisation (``medmoe.model.text.ReportTokenizer``) and trims the slots,
so it returns what ``MedMoE.encode_text`` returns.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from .errors import MissingExtraError

IMAGE_FILE, TEXT_FILE, TOKENIZER_DIR, CONFIG_FILE = "image_encoder.onnx", "text_encoder.onnx", "tokenizer", "config.json"
OPSET = 18


class ImageGraph(nn.Module):
    """What ``image_encoder.onnx`` computes: ``encode_image`` with image-router routing (the image side
    and the gate only, not the text encoder), and the head's probabilities when the model has a head."""

    def __init__(self, model):
        super().__init__()
        self.image, self.gate, self.head = model.image, model.gate, getattr(model, "head", None)
        self.head_features, self.multi_label = model.config.head_features, bool(model.config.head_multi_label)

    def forward(self, images: torch.Tensor):
        from .model.medmoe import encode_image, encode_image_all_experts, head_input, head_probabilities

        if self.gate is None or self.gate.soft:  # static shapes already
            out = encode_image(self.image, self.gate, images)
            outputs = out.global_emb, out.local_map, out.expert
        else:
            global_emb, every, route = encode_image_all_experts(self.image, self.gate, images)
            outputs = global_emb, every[route.expert, torch.arange(images.shape[0], device=images.device)], route.expert
        if self.head is None:
            return outputs
        logits = self.head(head_input(*outputs[:2], self.head_features))  # MedMoE.head_probabilities
        return *outputs, head_probabilities(logits, self.multi_label)


class TextGraph(nn.Module):
    """What ``text_encoder.onnx`` computes: ``TextEncoder.embed`` without the lengths."""

    def __init__(self, model):
        super().__init__()
        self.text = model.text

    def forward(self, input_ids, attention_mask, word_ids):
        global_emb, words, _ = self.text.embed(input_ids, attention_mask, word_ids)
        return global_emb, words


def _export(module: nn.Module, inputs: tuple, path: Path, names: list[str], outputs: list[str], dynamic: dict) -> None:
    import warnings

    with warnings.catch_warnings():  # the exporter's notes on its own internals are not the user's concern
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, inputs, dynamo=True, input_names=names, output_names=outputs,
                                    dynamic_shapes=dynamic, opset_version=OPSET, external_data=False)
    tmp = path.with_name(f".{path.name}.tmp")
    program.save(str(tmp))
    os.replace(tmp, path)


@torch.no_grad()
def export_onnx(model, out: str | os.PathLike) -> Path:
    """Write the two graphs, the tokenizer and the configuration to ``out``; returns ``out``."""
    require_export_extra("onnx", "onnxscript")
    from .files import atomic_write_text

    model = model.eval().cpu()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    size = model.config.image_size
    batch = torch.export.Dim("batch")
    head = ["probabilities"] if getattr(model, "head", None) is not None else []
    _export(ImageGraph(model), (torch.rand(2, 3, size, size),), out / IMAGE_FILE, ["images"],
            ["global_emb", "local_map", "expert", *head], {"images": {0: batch}})
    example = model.text.tokenize(["a chest radiograph", "no acute finding seen today"])
    tokens = torch.export.Dim("tokens", max=model.config.max_length)
    shapes = {0: batch, 1: tokens}
    _export(TextGraph(model), (example.input_ids, example.attention_mask, example.word_ids), out / TEXT_FILE,
            ["input_ids", "attention_mask", "word_ids"], ["global_emb", "words"],
            {"input_ids": shapes, "attention_mask": shapes, "word_ids": shapes})
    shutil.rmtree(out / TOKENIZER_DIR, ignore_errors=True)
    model.text.tokenizer.save_pretrained(out / TOKENIZER_DIR)
    atomic_write_text(out / CONFIG_FILE, json.dumps(model.config.to_dict(), indent=2))
    return out


class OnnxImageEncoder:
    """``image_encoder.onnx`` under onnxruntime: images [B, 3, S, S] -> (global_emb, local_map, expert) arrays,
    and probabilities [B, C] for a model with a fine-tuned head."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        self.session = _session(Path(folder) / IMAGE_FILE, threads)

    def __call__(self, images):
        import numpy as np

        return self.session.run(None, {"images": np.ascontiguousarray(images, dtype=np.float32)})


class OnnxTextEncoder:
    """``text_encoder.onnx`` plus the saved tokenizer: reports -> (global_emb [B, D], words [B, N, D],
    lengths [B]), as ``MedMoE.encode_text`` gives them."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        from .config import MedMoEConfig
        from .model.text import ReportTokenizer

        folder = Path(folder)
        self.session = _session(folder / TEXT_FILE, threads)
        config = MedMoEConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))
        self.tokenize = ReportTokenizer.of(config, str(folder / TOKENIZER_DIR))

    def __call__(self, reports: list[str]):
        tokens = self.tokenize(reports)
        global_emb, words = self.session.run(None, {"input_ids": tokens.input_ids.numpy(),
                                                    "attention_mask": tokens.attention_mask.numpy(),
                                                    "word_ids": tokens.word_ids.numpy()})
        lengths = tokens.word_ids.max(dim=1).values.numpy() + 1
        return global_emb, words[:, : lengths.max()], lengths


def require_export_extra(*modules: str) -> None:
    """A MissingExtraError naming the export extra if one of ``modules`` is not installed."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(f"{' and '.join(missing)} not installed: ONNX export needs pip install 'medmoe[export]'")


def _session(path: Path, threads: int | None):
    require_export_extra("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
