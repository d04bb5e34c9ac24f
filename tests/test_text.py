import pytest
import torch

import medmoe
from medmoe.config import load_config
from medmoe.errors import ConfigError

REPORTS = ["Moderate left pleural effusion.", "T2-weighted images: no focal lesion in the brain parenchyma.", "Normal."]


def reference_words(model, reports):
    """Per-token loop: sum the last 4 layers, add each word piece into its word."""
    text = model.text
    cleaned = [" ".join(__import__("re").findall(r"\w+", r)) for r in reports]
    enc = text.tokenizer(cleaned, padding=True, truncation=True, max_length=text.max_length, return_tensors="pt")
    hidden = text.encoder(**enc, output_hidden_states=True).hidden_states
    summed = sum(hidden[-4:])
    out = []
    for b in range(len(reports)):
        words = {}
        for t, w in enumerate(enc.word_ids(b)):
            if w is not None:
                words[w] = words.get(w, 0) + summed[b, t]
        out.append(torch.stack([words[w] for w in sorted(words)]))
    return out


def test_word_pieces_merge_into_words_like_a_per_token_loop(tiny):
    with torch.no_grad():
        out = tiny.encode_text(REPORTS)
        ref = reference_words(tiny, REPORTS)
    assert out.lengths.tolist() == [len(r) for r in ref] == [4, 10, 1]
    assert out.tokens[1][:3] == ["T2", "weighted", "images"]
    for b, words in enumerate(ref):
        torch.testing.assert_close(out.words[b, : len(words)], tiny.text.local_proj(words))
        assert out.words[b, len(words):].abs().sum() == 0
        torch.testing.assert_close(out.global_emb[b], tiny.text.global_proj(words.mean(0)))


def test_max_length_truncates_reports():
    model = medmoe.create_model("tiny", max_length=8).eval()
    with torch.no_grad():
        out = model.encode_text(["one two three four five six seven eight nine ten eleven"])
    assert out.lengths.tolist() == [6]  # 8 word pieces minus [CLS] and [SEP]
    assert out.tokens[0] == ["one", "two", "three", "four", "five", "six"]


def test_freeze_text_keeps_encoder_frozen_and_projections_trainable():
    model = medmoe.create_model("tiny", freeze_text=True)
    assert not any(p.requires_grad for p in model.text.encoder.parameters())
    assert model.text.global_proj.weight.requires_grad and model.text.local_proj.weight.requires_grad


def test_pretrained_minilm_loads_offline():
    from safetensors.torch import load_file

    from medmoe.model.text import resolve_text_source

    model = medmoe.create_model("tiny", text_pretrained=True, text={})
    weights = load_file(f"{resolve_text_source('minilm')}/model.safetensors")
    encoder = model.text.encoder.state_dict()
    name = next(k for k in weights if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(encoder["embeddings.word_embeddings.weight"], weights[name])
    assert model.text.encoder.config.hidden_size == 384


def test_empty_report_is_a_clear_error(tiny):
    import pytest

    with pytest.raises(ValueError, match="report 1 has no words"):
        tiny.encode_text(["fine", " ... "])


def test_pretrained_text_weights_that_cannot_be_had_are_an_error(tmp_path):
    paper = load_config("paper")
    assert paper.text_pretrained and paper.colour == "rgb"  # the paper preset asks for Bio_ClinicalBERT's weights
    (tmp_path / "bert").mkdir()
    with pytest.raises(ConfigError, match=r"cannot load the pretrained text weights '.*bert'.*text_pretrained=false"):
        medmoe.create_model("tiny", text_pretrained=True, text_model=str(tmp_path / "bert"))
