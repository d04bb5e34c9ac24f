"""`medmoe finetune`: a head on a user's labels (linear, full, LoRA), saved as a model folder that load,
classify and export read; multi-label; bad input as one-line errors; the LoRA module on its own."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import medmoe
from medmoe.classify import HeadClassifier, classify
from medmoe.cli import main
from medmoe.errors import ConfigError, DataError
from medmoe.model.lora import LoRALinear, add_lora, lora_parameters, merge_lora
from medmoe.train.finetune import (FinetuneArgs, class_weights, classification_metrics, finetune, predict,
                                   read_labelled)

SPLITS = ("train",) * 24 + ("val",) * 8 + ("test",) * 8


def write_manifest(root, rows: list[dict], name: str = "manifest.jsonl"):
    (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / name


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """40 images, 64 px: a bright left half, right half, both or neither (3:1 more "left" than "right"
    images, for class weights); columns: finding (one class), left/right (0/1), labels (a list)."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, split in enumerate(SPLITS):
        left, right = i % 4 in (0, 1, 2) if i % 8 < 4 else i % 2 == 0, i % 4 == 3 or i % 8 == 6
        image = rng.random((64, 64)) * 0.3
        image[:, :32] += 0.6 * left
        image[:, 32:] += 0.6 * right
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        rows.append({"image": f"images/{i}.png", "report": "an image.", "split": split,
                     "finding": "both" if left and right else "left" if left else "right" if right else "none",
                     "left": int(left), "right": int(right),
                     "labels": [n for n, on in (("left", left), ("right", right)) if on]})
    return root, rows, write_manifest(root, rows)


def quick(data, **kw) -> FinetuneArgs:
    return FinetuneArgs(data=str(data), **{"labels": ["finding"], "batch_size": 8, "progress": False, **kw})


@pytest.fixture(scope="module")
def linear(tiny, labelled, tmp_path_factory):
    out = tmp_path_factory.mktemp("linear") / "model"
    return finetune(tiny, quick(labelled[2], out=str(out), epochs=30))


def test_labels_are_read_per_split_with_classes_weights_and_skipped_rows(labelled, tmp_path):
    root, rows, manifest = labelled
    data = read_labelled(manifest, ["finding"])
    assert data.classes == ["both", "left", "none", "right"] and not data.multi_label
    assert data.sizes() == {"train": 24, "val": 8, "test": 8}
    counts = torch.bincount(data.targets["train"], minlength=4)
    weights = class_weights(data.targets["train"], 4, False)
    torch.testing.assert_close(weights, 24 / (4 * counts.float()))
    assert weights[1] < weights[3]  # left is common, right rare
    unlabelled = [{**r, "finding": None if i in (0, 30) else r["finding"]} for i, r in enumerate(rows)]
    skipped = read_labelled(write_manifest(root, unlabelled, "some.jsonl"), ["finding"])
    assert skipped.unlabelled == {"train": 1, "val": 1, "test": 0} and skipped.sizes()["train"] == 23


def test_bad_label_input_is_a_one_line_error(tiny_folder, labelled, capsys):
    root, rows, manifest = labelled
    with pytest.raises(DataError, match="no label column 'grade'"):
        read_labelled(manifest, ["grade"])
    no_val = write_manifest(root, [{**r, "split": "train" if r["split"] == "val" else r["split"]} for r in rows],
                            "noval.jsonl")
    with pytest.raises(DataError, match="no labelled row in the val split"):
        read_labelled(no_val, ["finding"])
    unseen = write_manifest(root, [{**r, "finding": "other"} if i == 35 else r for i, r in enumerate(rows)],
                            "unseen.jsonl")
    with pytest.raises(DataError, match="class 'other' has no training row \\(it is in the test split\\)"):
        read_labelled(unseen, ["finding"])
    bad_cell = write_manifest(root, [{**r, "left": "maybe"} if i == 3 else r for i, r in enumerate(rows)], "bad.jsonl")
    with pytest.raises(DataError, match="row 4: 'maybe' is not 1, 0, -1 or blank"):
        read_labelled(bad_cell, ["left", "right"])
    with pytest.raises(ConfigError, match="mode must be one of"):
        FinetuneArgs(data="x", mode="partial")
    capsys.readouterr()
    assert main(["finetune", "--model", str(tiny_folder), "--data", str(no_val), "--out", str(root / "x")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medmoe: error: ") and "val split" in err and len(err.strip().splitlines()) == 1
    assert main(["finetune", "--model", str(tiny_folder), "--data", str(manifest)]) == 2  # no --out


def test_linear_mode_loss_decreases_and_the_encoder_is_untouched(tiny, linear):
    record = linear.record
    losses = [h["train_loss"] for h in record["history"]]
    assert record["mode"] == "linear" and len(losses) >= 5 and losses[-1] < losses[0]
    assert record["sizes"] == {"train": 24, "val": 8, "test": 8} and record["unlabelled"]["train"] == 0
    assert set(record["test"]) >= {"accuracy", "macro_auc", "per_class_auc", "balanced_accuracy"}
    assert record["test"]["accuracy"] > 0.5  # four classes: chance is 0.25
    tuned = linear.model
    assert tuned is not tiny and tiny.head is None and tuned.config.head_classes == record["classes"]
    base = tiny.state_dict()
    assert all(torch.equal(v, base[k]) for k, v in tuned.state_dict().items() if not k.startswith("head."))


def test_saved_and_reloaded_classifier_gives_identical_probabilities(linear, labelled):
    root = labelled[0]
    folder = linear.folder
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "tokenizer", "finetune.json"}
    saved = json.loads((folder / "finetune.json").read_text())
    assert saved["classes"] == linear.record["classes"] and saved["best_epoch"] == linear.record["best_epoch"]
    loaded = medmoe.load(folder)
    images = [str(root / "images" / f"{i}.png") for i in (32, 33, 38)]
    before, after = HeadClassifier(linear.model)(images), HeadClassifier(loaded)(images)
    assert torch.equal(before.probabilities, after.probabilities)
    torch.testing.assert_close(after.probabilities.sum(1), torch.ones(3))
    # what finetune measured is what the reloaded model predicts
    rows = read_labelled(labelled[2], ["finding"]).rows["test"]
    _, probabilities = predict(loaded, rows)
    metrics = classification_metrics(probabilities, read_labelled(labelled[2], ["finding"]).targets["test"],
                                     saved["classes"], False)
    assert metrics["accuracy"] == pytest.approx(saved["test"]["accuracy"])


def test_classify_uses_the_head_without_classes_and_prompts_with_them(linear, labelled, tmp_path, capsys):
    root = labelled[0]
    image = str(root / "images" / "33.png")
    model = medmoe.load(linear.folder)
    by_head = classify(model, [image])
    assert by_head.source == "head" and by_head.classes == linear.record["classes"]
    torch.testing.assert_close(by_head.probabilities, HeadClassifier(model)([image]).probabilities)
    zero_shot = classify(model, [image], ["left", "right"])
    assert zero_shot.source == "prompts" and zero_shot.classes == ["left", "right"]
    out = tmp_path / "r.json"
    assert main(["classify", "--model", str(linear.folder), "--image", image, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[3:] == linear.record["classes"]
    assert "probabilities from the trained head, fine-tuned on 4 classes" in printed
    record = json.loads(out.read_text())[0]
    assert record["source"] == "head"
    assert list(record["probabilities"].values()) == pytest.approx(by_head.probabilities[0].tolist(), abs=1e-6)


def test_classify_without_classes_needs_a_head(tiny, tiny_folder, labelled, capsys):
    with pytest.raises(ConfigError, match="no trained head"):
        classify(tiny, torch.zeros(1, 3, 64, 64))
    image = str(labelled[0] / "images" / "1.png")
    assert main(["classify", "--model", str(tiny_folder), "--image", image]) == 2
    assert "needs --classes" in capsys.readouterr().err


@pytest.mark.slow
def test_multi_label_from_columns_and_from_lists(tiny, labelled, tmp_path):
    manifest = labelled[2]
    wide = finetune(tiny, quick(manifest, labels=["left", "right"], epochs=20, out=str(tmp_path / "wide")))
    listed = finetune(tiny, quick(manifest, labels=["labels"], epochs=20))
    for result in (wide, listed):
        record = result.record
        assert record["multi_label"] and record["classes"] == ["left", "right"]
        assert set(record["test"]["per_class_auc"]) == {"left", "right"} and "exact_match" in record["test"]
        assert record["history"][-1]["train_loss"] < record["history"][0]["train_loss"]
    assert wide.record["class_weights"] == listed.record["class_weights"]  # the same labels, two spellings
    loaded = medmoe.load(tmp_path / "wide")
    assert loaded.config.head_multi_label
    result = classify(loaded, [str(labelled[0] / "images" / f"{i}.png") for i in range(4)])
    assert result.multi_label and ((result.probabilities > 0) & (result.probabilities < 1)).all()
    assert not torch.allclose(result.probabilities.sum(1), torch.ones(4))  # sigmoids, not a softmax


@pytest.mark.slow
def test_full_mode_trains_the_image_side_deterministically(tiny, labelled):
    args = quick(labelled[2], mode="full", epochs=2, patience=5)
    first, again = finetune(tiny, args), finetune(tiny, args)
    stages = [h["stage"] for h in first.record["history"]]
    assert stages[-2:] == ["full", "full"] and stages[0] == "linear"  # linear probing, then fine-tuning
    base, tuned = tiny.state_dict(), first.model.state_dict()
    swin = next(k for k in base if k.endswith("blocks.0.attention.q_proj.weight"))
    assert not torch.equal(tuned[swin], base[swin])  # the backbone trained (the head reads the experts' map)
    assert all(torch.equal(tuned[k], base[k]) for k in base if k.startswith("text."))  # the text side is frozen
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in tuned.items())
    assert first.record["test"] == again.record["test"]


@pytest.mark.slow
def test_lora_changes_only_the_adapters_and_saves_merged(tiny, labelled, tmp_path, monkeypatch):
    from medmoe.train import finetune as module

    trained = {}
    original = module._fit_encoder

    def keep(model, *args, **kwargs):  # the in-memory model after training, before the adapters are merged
        out = original(model, *args, **kwargs)
        trained["state"] = {k: v.clone() for k, v in model.state_dict().items()}
        return out

    monkeypatch.setattr(module, "_fit_encoder", keep)
    result = finetune(tiny, quick(labelled[2], mode="lora", epochs=2, out=str(tmp_path / "lora")))
    base, state = tiny.state_dict(), trained["state"]
    adapters = [k for k in state if ".lora_" in k]
    assert len(adapters) == 2 * result.record["adapted_layers"] == 2 * 6 * 4  # 4 Swin blocks, 6 layers each
    for key, value in state.items():
        if ".lora_" in key or key.startswith("head."):
            continue
        assert torch.equal(value, base[key.replace(".base.", ".")]), key  # every base weight bit-identical
    assert any(not torch.equal(state[k], torch.zeros_like(state[k])) for k in adapters if k.endswith("lora_b"))
    merged = result.model.state_dict()
    assert set(merged) == set(base) | {"head.weight", "head.bias"}  # a plain model folder: no adapter left
    key = next(k for k in base if k.endswith("blocks.0.attention.q_proj.weight"))
    prefix = key.removesuffix(".weight")
    delta = state[f"{prefix}.lora_b"] @ state[f"{prefix}.lora_a"] * (16.0 / 8)
    torch.testing.assert_close(merged[key], base[key] + delta)
    loaded = medmoe.load(tmp_path / "lora")
    images = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(HeadClassifier(loaded)(images).probabilities,
                               HeadClassifier(result.model)(images).probabilities)


def test_lora_module_starts_at_the_base_and_merges_exactly():
    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("blocks", torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4)))
    net.add_module("other", torch.nn.Linear(4, 2))
    x = torch.randn(7, 6)
    reference = net(x)
    names = add_lora(net, rank=2, alpha=4.0, seed=1)
    assert names == ["blocks.0", "blocks.2"] and isinstance(net.blocks[0], LoRALinear)
    assert not isinstance(net.other, LoRALinear)  # only layers inside blocks
    torch.testing.assert_close(net(x), reference)  # B starts at zero
    assert [p.shape for p in lora_parameters(net)] == [(2, 6), (5, 2), (2, 5), (4, 2)]
    with torch.no_grad():
        for p in lora_parameters(net):
            p.add_(torch.randn_like(p))
    adapted = net(x)
    assert not torch.allclose(adapted, reference)
    assert merge_lora(net) == 2 and not any(isinstance(m, LoRALinear) for m in net.modules())
    torch.testing.assert_close(net(x), adapted)
    again = torch.nn.Sequential()
    again.add_module("blocks", torch.nn.Sequential(torch.nn.Linear(6, 5)))
    add_lora(again, seed=1)
    first = again.blocks[0].lora_a.clone()
    again.blocks[0] = again.blocks[0].base
    add_lora(again, seed=1)
    assert torch.equal(again.blocks[0].lora_a, first)  # seeded
    with pytest.raises(ValueError, match="no layer to adapt"):  # never wrapped twice
        add_lora(again)


def test_metrics_multi_class_and_multi_label():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    m = classification_metrics(probs, torch.tensor([0, 1, 2, 1]), ["a", "b", "c"], False)
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["per_class_auc"]["c"] == 1.0 and m["macro_auc"] == pytest.approx(np.mean(list(m["per_class_auc"].values())))
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    m = classification_metrics(torch.tensor([[0.9, 0.2], [0.6, 0.4], [0.2, 0.7], [0.3, 0.9]]), labels, ["x", "y"], True)
    assert m["accuracy"] == 7 / 8 and m["exact_match"] == 0.75 and m["per_class_auc"] == {"x": 1.0, "y": 1.0}
    assert classification_metrics(torch.tensor([[0.9, 0.1]]), torch.tensor([[1.0, 0.0]]), ["x", "y"], True)[
        "macro_auc"] is None  # one row: no class has both outcomes


@pytest.mark.slow
def test_finetune_command_writes_a_model_folder(tiny_folder, labelled, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["finetune", "--model", str(tiny_folder), "--data", str(labelled[2]), "--labels", "left", "right",
                 "--out", str(out), "--epochs", "5", "--batch-size", "8", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "multi-label" in printed and "left   AUC" in printed and f"wrote {out}" in printed
    record = json.loads((out / "finetune.json").read_text())
    assert record["args"]["labels"] == ["left", "right"] and record["base_model"] == str(tiny_folder)
    assert medmoe.load(out).config.head_classes == ["left", "right"]
