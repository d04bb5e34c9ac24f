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
def test_shared_expert_and_upcycling_export(tmp_path):
    """The shared expert runs beside the routed one, and a model saved before its upcycling step routes
    every image to expert 0: the graph computes both, without a branch on the flag."""
    from medmoe.export import ImageGraph

    torch.manual_seed(4)
    model = medmoe.create_model("tiny", shared_expert=True, expert_init="upcycle", upcycle_step=5).eval()
    model.requires_grad_(False).gate.image_router.mlp[2].weight.mul_(20)
    images = torch.randn(6, 3, 64, 64) * torch.linspace(0.2, 3, 6).view(6, 1, 1, 1)
    before = model.encode_image(images)
    assert before.expert.tolist() == [0] * 6  # not yet upcycled
    graph = ImageGraph(model)
    torch.testing.assert_close(graph(images)[1], before.local_map)
    model.upcycle()
    for p in model.image.experts.parameters():  # as if trained after the split: the experts differ again
        p.add_(0.05 * torch.randn_like(p))
    after = model.encode_image(images)
    assert len(set(after.expert.tolist())) > 1
    folder = model.save_pretrained(tmp_path / "m")
    assert main(["export", "--model", str(folder), "--out", str(tmp_path / "onnx")]) == 0
    global_emb, local_map, expert = OnnxImageEncoder(tmp_path / "onnx")(images.numpy())
    assert np.array_equal(expert, after.expert.numpy())
    np.testing.assert_allclose(local_map, after.local_map.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(global_emb, after.global_emb.numpy(), atol=1e-4, rtol=0)


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


@pytest.mark.slow
def test_a_fine_tuned_head_is_an_output_of_the_image_graph(tmp_path):
    """A model with a head (medmoe finetune's folder): the image graph's fourth output is the head's
    probabilities, softmax or sigmoid, on v_g or on the routed expert's pooled map."""
    import copy

    from medmoe.classify import HeadClassifier
    from medmoe.export import ImageGraph
    from medmoe.train.finetune import attach_head

    torch.manual_seed(3)
    base = medmoe.create_model("tiny").eval().requires_grad_(False)
    base.gate.image_router.mlp[2].weight.mul_(20)
    images = torch.randn(5, 3, 64, 64) * torch.linspace(0.2, 3, 5).view(5, 1, 1, 1)
    models = {}
    for multi_label, features in ((False, "global"), (True, "local")):
        model = models[features] = attach_head(copy.deepcopy(base), ["a", "b", "c"], multi_label, features)
        model.head.requires_grad_(False).weight.normal_()
        graph = ImageGraph(model)(images)  # what is exported, in PyTorch
        assert len(graph) == 4
        torch.testing.assert_close(graph[3], HeadClassifier(model)(images).probabilities)
    folder = models["local"].save_pretrained(tmp_path / "model")  # one export: multi-label, local features
    assert main(["export", "--model", str(folder), "--out", str(tmp_path / "onnx")]) == 0
    outputs = OnnxImageEncoder(tmp_path / "onnx")(images.numpy())
    assert len(outputs) == 4
    reference = HeadClassifier(medmoe.load(folder))(images).probabilities
    np.testing.assert_allclose(outputs[3], reference.numpy(), atol=1e-4, rtol=0)
