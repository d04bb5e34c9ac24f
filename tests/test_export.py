"""ONNX export: the graphs under onnxruntime give what PyTorch gives (<= 1e-4), for any batch size."""
import numpy as np
import pytest
import torch

import medmoe
from medmoe.cli import main

pytest.importorskip("onnxruntime", reason="medmoe[export] not installed")
from medmoe.export import OnnxImageEncoder, OnnxTextEncoder  # noqa: E402

REPORTS = ["Right lower lobe consolidation, likely pneumonia.", "Normal.",
           "Hypoechoic nodule in the left thyroid lobe; no calcification. " * 6]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model whose router sends these test images to different experts, exported by the CLI."""
    torch.manual_seed(3)
    model = medmoe.create_model("tiny").eval().requires_grad_(False)
    model.gate.image_router.mlp[2].weight.mul_(20)  # spread the routing of random images over the experts
    folder = model.save_pretrained(tmp_path_factory.mktemp("model") / "m")
    out = tmp_path_factory.mktemp("onnx")
    assert main(["export", "--model", str(folder), "--out", str(out)]) == 0
    return model, out


@pytest.mark.slow
def test_image_graph_matches_pytorch_with_routing(exported):
    model, out = exported
    encoder = OnnxImageEncoder(out)
    torch.manual_seed(0)
    images = torch.randn(9, 3, 64, 64) * torch.linspace(0.2, 3, 9).view(9, 1, 1, 1)
    reference = model.encode_image(images)
    assert len(set(reference.expert.tolist())) > 1  # the gather is exercised
    for batch in (images[:1], images):  # the batch size is dynamic
        global_emb, local_map, expert = encoder(batch.numpy())
        ref = model.encode_image(batch)
        assert np.array_equal(expert, ref.expert.numpy())
        np.testing.assert_allclose(global_emb, ref.global_emb.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(local_map, ref.local_map.numpy(), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_text_graph_and_tokenizer_match_pytorch(exported):
    model, out = exported
    assert (out / "tokenizer").is_dir()
    encoder = OnnxTextEncoder(out)
    for reports in (REPORTS, REPORTS[1:2]):
        global_emb, words, lengths = encoder(reports)
        ref = model.encode_text(reports)
        assert lengths.tolist() == ref.lengths.tolist() and words.shape == tuple(ref.words.shape)
        np.testing.assert_allclose(global_emb, ref.global_emb.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(words, ref.words.numpy(), atol=1e-4, rtol=0)
