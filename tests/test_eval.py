"""Evaluation metrics on hand-made cases with known answers, the eval/explain commands, and baselines."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import medmoe
from medmoe.cli import main
from medmoe.data.manifest import Row
from medmoe.eval.embed import Embeddings
from medmoe.eval.grounding import box_mask, case_scores, cnr, phrase_words, summarise
from medmoe.eval.probe import linear_probe_scores
from medmoe.eval.retrieval import recall_at_k
from medmoe.eval.routing import routing_scores
from medmoe.eval import ENSEMBLES, SCORINGS
from medmoe.eval.zeroshot import (
    PromptBank,
    class_probabilities,
    class_prompts,
    classification_metrics,
    combine,
    embed_prompts,
    normalise_across_images,
    zeroshot_scores,
)


def embeddings(image, text=None, modalities=None, labels=None, experts=None):
    n = len(image)
    modalities = modalities or ["xray"] * n
    rows = [Row(i + 1, Path(f"{i}.png"), "r", m, "test", [l] if l else []) for i, (m, l) in
            enumerate(zip(modalities, labels or [None] * n))]
    index = {"xray": 0, "ct": 1, "mri": 2, "ultrasound": 3}
    return Embeddings(rows, image, image if text is None else text, experts, experts,
                      torch.tensor([index.get(m, -1) for m in modalities]))


def test_recall_at_k_perfect_reversed_and_known_ranks():
    e = torch.eye(6)
    assert recall_at_k(e, e) == {f"{d}_r{k}": 1.0 for k in (1, 5, 10) for d in ("i2t", "t2i")}
    shifted = torch.roll(e, 1, dims=0)  # image i matches report i+1; its own report ties with the rest
    r = recall_at_k(e, shifted, ks=(1, 2))
    assert r["i2t_r1"] == 0.0 and r["t2i_r1"] == 0.0  # one report strictly better: rank 2
    assert r["i2t_r2"] == 1.0 and r["t2i_r2"] == 1.0  # ties count in the pair's favour
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    r = recall_at_k(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), text, ks=(1, 2))
    assert r["i2t_r1"] == pytest.approx(2 / 3) and r["i2t_r2"] == 1.0


def test_classification_metrics_perfect_and_inverted():
    y = np.array([0, 1, 2, 2, 1, 0])
    perfect = np.eye(3)[y]
    assert classification_metrics(y, perfect) == {"accuracy": 1.0, "balanced_accuracy": 1.0, "macro_auc": 1.0, "n": 6}
    worst = 1 - perfect
    m = classification_metrics(y, worst + np.array([0, 1e-3, 2e-3]))
    assert m["macro_auc"] == 0.0 and m["accuracy"] == 0.0


def test_zeroshot_with_a_fake_text_encoder_that_knows_the_answer():
    classes = {"xray": {"normal": ["clear"], "effusion": ["fluid"]}, "ct": {"normal": ["fine"], "stone": ["calc"]}}
    code = {"clear": 0, "fluid": 1, "fine": 2, "calc": 3}

    def encode_text(prompts):
        g = torch.stack([torch.eye(4)[code[p.split()[-1].strip(".")]] for p in prompts])
        return SimpleNamespace(global_emb=g, words=g[:, None], lengths=torch.ones(len(prompts), dtype=torch.long))

    model = SimpleNamespace(encode_text=encode_text)
    labels = ["normal", "effusion", "effusion", "normal", "stone", "stone"]
    modalities = ["xray", "xray", "xray", "ct", "ct", "ct"]
    bank = embed_prompts(model, classes, ["a {}.", "{}"])
    assert bank.classes == [("xray", "normal"), ("xray", "effusion"), ("ct", "normal"), ("ct", "stone")]
    assert bank.prompt_class.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    right = embeddings(torch.eye(4)[[0, 1, 1, 2, 3, 3]] + 0.01, modalities=modalities, labels=labels)
    wrong = embeddings(torch.eye(4)[[1, 0, 0, 3, 2, 2]], modalities=modalities, labels=labels)
    for ensemble in ENSEMBLES:
        out = zeroshot_scores(right, bank, "global", ensemble)
        assert out["accuracy"] == 1.0 and out["macro_auc"] == 1.0 and out["n"] == 6
        assert set(out["per_modality"]) == {"xray", "ct"} and out["per_modality"]["ct"]["n"] == 3
        assert (out["scoring"], out["ensemble"]) == ("global", ensemble)
        bad = zeroshot_scores(wrong, bank, "global", ensemble)
        assert bad["accuracy"] == 0.0 and bad["balanced_accuracy"] == 0.0
    # local scores of each image against each prompt, given: the local and both scorings read them
    right.prompt_local = torch.eye(4)[[0, 1, 1, 2, 3, 3]].repeat_interleave(2, dim=1)
    assert zeroshot_scores(right, bank, "local", "max")["accuracy"] == 1.0
    wrong.prompt_local = right.prompt_local
    assert zeroshot_scores(wrong, bank, "both", "mean")["accuracy"] < zeroshot_scores(wrong, bank, "local")["accuracy"]


def test_zeroshot_normalises_each_class_across_images():
    """GLoRIA's z-score per class: a class that scores high on every image no longer wins everywhere."""
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.3], [0.95, 0.0]])
    z = normalise_across_images(scores)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    assert z.argmax(1).tolist() == [0, 1, 0] and scores.argmax(1).tolist() == [0, 0, 0]
    assert torch.equal(normalise_across_images(scores[:1]), scores[:1])


@pytest.mark.parametrize("scoring", SCORINGS)
def test_class_probabilities_follow_the_routed_expert(scoring):
    torch.manual_seed(0)
    model = medmoe.create_model("tiny", global_source="expert").eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    classes = {"effusion": ["pleural effusion"], "normal": ["no acute findings", "clear lungs"]}
    with torch.no_grad():
        routed = model.encode_image(x)
        bank = class_prompts(model, classes, ["{}."])
        probs = class_probabilities(model, routed, bank, scoring=scoring)
        other = class_probabilities(model, model.encode_image(x, expert=(routed.expert + 1) % 4), bank, scoring=scoring)
    assert probs.shape == (3, 2) and torch.allclose(probs.sum(1), torch.ones(3))
    assert not torch.allclose(probs, other)  # every scoring sees the expert: through v_g and the local map
    names = class_probabilities(model, routed, class_prompts(model, ["effusion", "normal"]), scoring=scoring)
    assert names.shape == (3, 2)


def test_linear_probe_separable_vs_random():
    g = torch.Generator().manual_seed(0)
    labels = ["a", "b", "c"] * 40
    centers = torch.randn(3, 8, generator=g) * 5
    train = embeddings(centers[[i % 3 for i in range(120)]] + torch.randn(120, 8, generator=g) * 0.1, labels=labels)
    test = embeddings(centers[[i % 3 for i in range(30)]] + torch.randn(30, 8, generator=g) * 0.1, labels=labels[:30])
    out = linear_probe_scores(train, test)
    assert set(out["fractions"]) == {"0.1", "1.0"} or set(out["fractions"]) == {"0.01", "0.1", "1.0"}
    assert out["fractions"]["1.0"]["accuracy_mean"] == 1.0 and out["fractions"]["1.0"]["n_train"] == 120
    noise = linear_probe_scores(embeddings(torch.randn(120, 8, generator=g), labels=labels),
                                embeddings(torch.randn(300, 8, generator=g), labels=labels[:30] * 10))
    assert noise["fractions"]["1.0"]["accuracy_mean"] < 0.6


def test_routing_confusion_accuracy_and_load(tiny):
    experts = torch.tensor([0, 0, 1, 3, 2, 2])
    e = embeddings(torch.zeros(6, 2), modalities=["xray", "xray", "ct", "ct", "mri", "ultrasound"], experts=experts)
    out = routing_scores(tiny, e)
    assert out["image"]["accuracy"] == pytest.approx(4 / 6)
    assert out["image"]["confusion"][1] == [0, 1, 0, 1] and out["image"]["confusion"][3] == [0, 0, 1, 0]
    assert out["image"]["load"] == pytest.approx([2 / 6, 1 / 6, 2 / 6, 1 / 6])


def test_grounding_scores_on_a_known_peak():
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:8, :8] = True  # the top-left quarter
    inside = torch.zeros(4, 4)
    inside[0, 0] = 1.0
    hit, mass, _, area = case_scores(inside, inside, mask)
    assert hit == 1.0 and mass > 0.9 and area == 0.25
    outside = torch.zeros(4, 4)
    outside[3, 3] = 1.0
    hit, mass, _, _ = case_scores(outside, outside, mask)
    assert hit == 0.0 and mass < 0.1
    _, uniform_mass, uniform_cnr, _ = case_scores(torch.full((4, 4), 1 / 16), torch.full((4, 4), 0.3), mask)
    assert uniform_mass == pytest.approx(0.25) and uniform_cnr == 0.0
    s = summarise([(1.0, 0.9, 2.0, 0.25), (0.0, 0.1, 0.0, 0.25)])
    assert s == {"pointing_game": 0.5, "attention_in_mask": 0.5, "cnr": 1.0, "uniform_pointing_game": 0.25,
                 "uniform_attention_in_mask": 0.25, "n": 2}


def test_cnr_matches_a_map_computed_by_hand():
    # inside: 1, 2, 3 (mean 2, variance 2/3); outside: 0, 0, 0, 1, 1, 1 (mean 0.5, variance 0.25)
    values = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True], [False, False, False], [False, False, False]])
    assert cnr(values, mask) == pytest.approx(1.5 / np.sqrt(2 / 3 + 0.25))
    assert cnr(-values, mask) == pytest.approx(cnr(values, mask))  # |difference|: contrast either way
    assert cnr(torch.ones(3, 3), mask) == 0.0


def test_box_mask_scales_boxes_drawn_on_another_size():
    mask = box_mask([[10, 20, 30, 40]], height=100, width=200)
    assert mask.sum() == 30 * 40 and mask[20, 10] and mask[59, 39] and not mask[60, 40]
    # the same box drawn on a 400 x 200 copy (MS-CXR's image_width, image_height) of this 200 x 100 image
    half = box_mask([[20, 40, 60, 80]], height=100, width=200, frame=[400, 200])
    assert (half == mask).all()
    both = box_mask([[0, 0, 5, 5], [190, 90, 50, 50]], height=100, width=200)  # a box past the edge is cut
    assert both.sum() == 25 + 10 * 10


def test_phrase_words_finds_the_finding_else_the_content_words():
    assert phrase_words(["Moderate", "left", "pleural", "effusion"], "effusion") == [3]
    assert phrase_words(["a", "liver", "lesion", "no", "kidney", "stone"], "kidney stone") == [4, 5]
    assert phrase_words(["stone", "in", "the", "kidney", "a", "kidney", "stone"], "kidney stone") == [5, 6]
    assert phrase_words(["small", "left", "apical", "pneumothorax"], None) == [0, 1, 2, 3]
    assert phrase_words(["there", "is", "a", "small", "opacity"], "Pneumonia") == [3, 4]
    tokens = ["opacity", "in", "the", "right", "lower", "lobe", "no", "effusion"]  # an MS-CXR phrase in its text
    assert phrase_words(tokens, "opacity in the right lower lobe") == [0, 3, 4, 5]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medmoe.data.synth import generate

    root = tmp_path_factory.mktemp("eval")
    data = generate(root / "data", n=120, seed=2, size=64, progress=False)
    assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(root / "run"), "--steps", "6",
                 "--batch-size", "16", "--quiet"]) == 0
    return root, data


@pytest.mark.slow
@pytest.mark.parametrize("task, keys", [
    ("zeroshot", {"accuracy", "balanced_accuracy", "macro_auc", "per_modality"}),
    ("retrieval", {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "per_modality"}),
    ("linear-probe", {"fractions"}),
    ("routing", {"image", "text", "modalities", "num_experts"}),
    ("grounding", {"pointing_game", "attention_in_mask", "uniform_pointing_game", "uniform_attention_in_mask",
                   "per_modality"}),
])
def test_eval_task_json_keys(trained, task, keys, capsys):
    root, data = trained
    out = root / f"{task}.json"
    assert main(["eval", task, "--model", str(root / "run"), "--data", str(data), "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert keys <= set(result) and result["split"] == "test"
    assert task.replace("-", "_") in capsys.readouterr().out


@pytest.mark.slow
def test_eval_all_and_explain(trained, tmp_path):
    root, data = trained
    assert main(["eval", "all", "--model", str(root / "run"), "--data", str(data), "--json",
                 str(tmp_path / "all.json"), "--quiet"]) == 0
    result = json.loads((tmp_path / "all.json").read_text())
    assert {"zeroshot", "retrieval", "linear_probe", "routing", "grounding"} <= set(result)
    assert result["variant"] == "medmoe" and result["split"] == "test"
    row = json.loads(data.read_text().splitlines()[0])
    assert main(["explain", "--model", str(root / "run"), "--image", str(data.parent / row["image"]),
                 "--report", row["report"], "--out", str(tmp_path / "fig.png")]) == 0
    with Image.open(tmp_path / "fig.png") as im:
        assert im.width > 200 and im.height > 100


@pytest.mark.parametrize("variant", ["static", "single-scale", "soft-moe"])
def test_baseline_variants_train_a_step(variant):
    from medmoe.config import load_config, variant_of
    from medmoe.eval.flops import image_side_cost
    from medmoe.losses import MedMoELoss

    cfg = load_config("tiny", variant)
    assert variant_of(cfg) == variant
    torch.manual_seed(0)
    model = medmoe.MedMoE(cfg).train()
    inputs = model(torch.randn(4, 3, 64, 64), ["left effusion", "normal", "liver lesion", "no cyst"],
                   torch.tensor([0, 0, 1, 3]))
    losses = MedMoELoss.from_config(cfg)(**inputs)
    losses["total"].backward()
    assert inputs["regions"].shape == (4, 32, 16, 16) and torch.isfinite(losses["total"])
    assert (inputs["route"] is None) == (variant != "soft-moe") and (losses["aux"] > 0) == (variant == "soft-moe")
    cost = image_side_cost(cfg)
    assert cost["params_active"] == cost["params_total"]  # no inactive experts in any baseline
    if variant == "soft-moe":  # the report router learns through the mixing weights
        assert model.gate.text_router.mlp[0].weight.grad.abs().sum() > 0
        local_grads = [p.grad for p in model.image.experts.parameters() if p.grad is not None]
        assert len(local_grads) == len(list(model.image.experts.parameters()))
    if variant == "single-scale":
        assert model.image.head.scale_scorer is None and len(model.image.head.project) == 1


def test_max_ensemble_picks_the_best_prompt_of_the_mean_of_global_and_local():
    """GLoRIA: max over a class's prompts of (global + local) / 2, not the two maxima averaged."""
    bank = PromptBank([("g", "a"), ("g", "b")], torch.tensor([0, 0, 1]), torch.tensor([[1.0, 0.0], [0.0, 1.0],
                      [0.6, 0.8]]), torch.zeros(3, 1, 2), torch.ones(3, dtype=torch.long))
    image = torch.tensor([[1.0, 0.0]])  # global cosines per prompt: 1.0, 0.0, 0.6
    local = torch.tensor([[0.0, 1.0, 0.5]])
    both = combine("both", "max", bank, image, local)
    torch.testing.assert_close(both, torch.tensor([[0.5, 0.55]]))  # prompts: (1+0)/2, (0+1)/2; (0.6+0.5)/2
    mean = combine("both", "mean", bank, image, local)  # centroid of a = (1,1)/sqrt2: cos 0.7071; local mean 0.5
    torch.testing.assert_close(mean, torch.tensor([[(0.5 ** 0.5 + 0.5) / 2, (0.6 + 0.5) / 2]]))
    with pytest.raises(ValueError, match="local scores"):
        combine("local", "mean", bank, image, None)
