"""PromptClassifier / classify and `medmoe classify`: files and tensors in, zero-shot probabilities and routing out."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import medmoe
from medmoe.cli import main
from medmoe.classify import PromptClassifier, classify, expert_modalities
from medmoe.data.io import load_image
from medmoe.data.transforms import to_model_input
from medmoe.errors import ConfigError, ImageLoadError
from medmoe.eval.zeroshot import class_probabilities, class_prompts

CLASSES = ["pneumonia", "normal", "fracture"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from pydicom.data import get_testdata_file

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((80, 96)) * 255).astype(np.uint8)).save(root / "noise.png")
    (root / "notes.txt").write_text("not an image")
    return {"dicom": get_testdata_file("CT_small.dcm"), "png": str(root / "noise.png"), "bad": str(root / "notes.txt")}


def test_files_are_classified_as_their_model_input(tiny, files):
    result = classify(tiny, [files["dicom"], files["png"]], CLASSES)
    batch = torch.stack([to_model_input(load_image(files[k]), tiny.config.image_size) for k in ("dicom", "png")])
    encoded = tiny.encode_image(batch)
    assert result.classes == CLASSES and result.probabilities.shape == (2, 3)
    torch.testing.assert_close(result.probabilities, class_probabilities(tiny, encoded, class_prompts(tiny, CLASSES)))
    torch.testing.assert_close(result.probabilities.sum(1), torch.ones(2))
    assert torch.equal(result.expert, encoded.expert)
    torch.testing.assert_close(result.router_probabilities, encoded.router_logits.softmax(1))
    assert result.top() == [CLASSES[i] for i in result.probabilities.argmax(1)]


def test_tensors_lists_and_phrase_maps(tiny, files):
    x = to_model_input(load_image(files["dicom"]), tiny.config.image_size)
    one = classify(tiny, x, CLASSES)  # a single [3, H, W] image
    assert one.probabilities.shape == (1, 3)
    as_map = classify(tiny, x[None], {c: [c] for c in CLASSES})
    torch.testing.assert_close(as_map.probabilities, one.probabilities)
    reworded = classify(tiny, x, {"pneumonia": ["lobar consolidation"], "normal": ["normal"], "fracture": ["fracture"]})
    assert not torch.allclose(reworded.probabilities, one.probabilities)  # the phrases are what is scored


def test_the_prompts_are_embedded_once_for_every_file(tiny, files, monkeypatch):
    classifier = PromptClassifier(tiny, CLASSES, ["a scan of {}", "{}"])
    calls = []
    monkeypatch.setattr(tiny, "encode_text", lambda *a, **k: calls.append(a))
    records = classifier.files([files["dicom"], files["png"], files["dicom"]], batch_size=1)  # three chunks
    assert calls == [] and [len(r["probabilities"]) for r in records] == [3, 3, 3]
    assert records[0]["probabilities"] == records[2]["probabilities"]


def test_each_expert_names_the_modalities_assigned_to_it(tiny, files):
    assigned = expert_modalities(tiny)
    assert assigned == {0: ["xray"], 1: ["ct"], 2: ["mri"], 3: ["ultrasound"]}
    result = classify(tiny, [files["dicom"]], CLASSES)
    assert result.modalities == [assigned[int(result.expert[0])]]
    two = medmoe.create_model("tiny", num_experts=2)
    assert expert_modalities(two) == {0: ["xray", "mri"], 1: ["ct", "ultrasound"]}


def test_bad_classes_and_files_are_clear_errors(tiny, files):
    with pytest.raises(ConfigError, match="at least 2"):
        classify(tiny, [files["png"]], ["only"])
    with pytest.raises(ConfigError, match="'normal'"):
        classify(tiny, [files["png"]], {"pneumonia": ["consolidation"], "normal": "normal"})
    with pytest.raises(ImageLoadError, match="notes.txt"):
        classify(tiny, [files["bad"]], CLASSES)


def test_classify_command_table_and_json(tiny, tiny_folder, files, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert main(["classify", "--model", str(tiny_folder), "--image", files["dicom"], files["bad"], files["png"],
                 "--classes", *CLASSES, "--json", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["image", "expert", "modality", *CLASSES]
    assert table[2].startswith("notes.txt") and "cannot be classified" in table[2] and "not a recognised image" in table[2]
    records = json.loads(out.read_text())
    assert [r["image"] for r in records] == [files["dicom"], files["bad"], files["png"]]
    expected = classify(tiny, [files["dicom"], files["png"]], CLASSES)
    for r, probs, expert in zip([records[0], records[2]], expected.probabilities, expected.expert):
        assert list(r["probabilities"]) == CLASSES
        assert r["probabilities"]["normal"] == pytest.approx(float(probs[1]), abs=1e-6)
        assert r["expert"] == int(expert) and r["modality"] == tiny.config.modalities[int(expert)]
        assert table[1 + records.index(r)].split()[1:3] == [str(r["expert"]), r["modality"]]
    assert "error" in records[1] and "probabilities" not in records[1]


def test_classify_command_prompts_file_and_nothing_readable(tiny_folder, files, tmp_path, capsys):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"templates": ["a scan showing {}"],
                                   "classes": {"pneumonia": ["consolidation"], "normal": ["no finding"]}}))
    out = tmp_path / "r.json"
    assert main(["classify", "--model", str(tiny_folder), "--image", files["png"], "--prompts", str(prompts),
                 "--json", str(out)]) == 0
    assert list(json.loads(out.read_text())[0]["probabilities"]) == ["pneumonia", "normal"]
    capsys.readouterr()
    assert main(["classify", "--model", str(tiny_folder), "--image", files["bad"], "--classes", "a", "b"]) == 1
    captured = capsys.readouterr()
    assert "cannot be classified" in captured.out and captured.err.startswith("medmoe: error: none of the 1 images")


def with_head(model, classes, multi_label=False, features="global"):
    """A copy of ``model`` with a random head over ``classes`` (what ``medmoe finetune`` leaves, untrained)."""
    import copy

    from medmoe.train.finetune import attach_head

    tuned = attach_head(copy.deepcopy(model), classes, multi_label, features)
    with torch.no_grad():
        tuned.head.weight.copy_(torch.randn(tuned.head.weight.shape, generator=torch.Generator().manual_seed(1)))
    return tuned


def test_a_head_model_is_classified_by_its_head_without_classes(tiny, files):
    from medmoe.classify import HeadClassifier

    x = torch.stack([to_model_input(load_image(files[k]), tiny.config.image_size) for k in ("dicom", "png")])
    for features in ("global", "local"):
        tuned = with_head(tiny, ["a", "b", "c"], features=features)
        encoded = tuned.encode_image(x)
        pooled = encoded.global_emb if features == "global" else encoded.local_map.mean(dim=(2, 3))
        result = classify(tuned, [files["dicom"], files["png"]])
        assert result.source == "head" and result.classes == ["a", "b", "c"] and not result.multi_label
        torch.testing.assert_close(result.probabilities, tuned.head(pooled).softmax(1))
        assert torch.equal(result.expert, encoded.expert)
    multi = with_head(tiny, ["a", "b"], multi_label=True)
    result = HeadClassifier(multi)(x)
    torch.testing.assert_close(result.probabilities, multi.head_logits(multi.encode_image(x)).sigmoid())
    assert result.multi_label
    prompts = classify(multi, x, CLASSES)  # class names given: zero-shot, head or not
    assert prompts.source == "prompts" and prompts.classes == CLASSES
    records = HeadClassifier(multi).files([files["png"], files["bad"]])
    assert records[0]["source"] == "head" and list(records[0]["probabilities"]) == ["a", "b"] and "error" in records[1]
