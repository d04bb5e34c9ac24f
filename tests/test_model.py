import json
import re

import pytest
import torch

import medmoe
from medmoe.config import load_config, parse_overrides
from medmoe.errors import ConfigError


def test_presets_and_overrides():
    cfg = load_config("tiny", num_experts=2, swin={"embed_dim": 8})
    assert cfg.num_experts == 2 and cfg.swin["embed_dim"] == 8 and cfg.swin["depths"] == [1, 1, 1, 1]
    paper = load_config("paper")
    assert (paper.image_size, paper.num_experts, paper.embed_dim, paper.grid_size) == (224, 6, 768, 56)
    assert parse_overrides(["num_experts=3", "moe=false", "swin.depths=[2,2,2,2]", "text_model=x/y"]) == {
        "num_experts": 3, "moe": False, "swin": {"depths": [2, 2, 2, 2]}, "text_model": "x/y"}
    model = medmoe.create_model("tiny", num_experts=3, embed_dim=16)
    assert len(model.image.experts.experts) == 3 and model.gate.text_router.mlp[-1].out_features == 3


@pytest.mark.parametrize("bad", [{"num_experts": "four"}, {"routing": "random"}, {"nope": 1}, {"moe": 1},
                                 {"colour": "cmyk"}, {"image_mean": [0.5, 0.5]}, {"image_std": [0.2, 0.0, 0.2]},
                                 {"image_mean": [0.5, "a", 0.5]}, {"init": "clip:x"}, {"init": "medclip:"}])
def test_bad_config_values_are_config_errors(bad):
    with pytest.raises(ConfigError):
        load_config("tiny", **bad)


@pytest.mark.parametrize("field, value, annotation", [
    ("scales", [1, "2"], "list[int]"), ("scales", [True, 2], "list[int]"), ("modalities", ["xray", 3], "list[str]"),
    ("grid", "4", "int | None"), ("embed_dim", 32.0, "int"), ("temp1", True, "float")])
def test_config_types_are_checked_inside_generic_annotations(field, value, annotation):
    with pytest.raises(ConfigError, match=re.escape(f"'{field}' must be {annotation} (got")):
        load_config("tiny", **{field: value})
    assert load_config("tiny", grid=None, temp1=4, modalities=["xray", "ct"]).temp1 == 4  # an int is a float


def test_save_load_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = medmoe.create_model("tiny", num_experts=3)
    model.train()
    model(torch.randn(6, 3, 64, 64), ["a b c"] * 6)  # move BatchNorm running stats off their init
    model.eval()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["num_experts"] == 3
    loaded = medmoe.MedMoE.from_pretrained(tmp_path / "m")
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        for out_a, out_b in [(model.encode_image(x), loaded.encode_image(x)),
                             (model.encode_text(["left effusion"]), loaded.encode_text(["left effusion"]))]:
            assert torch.equal(out_a.global_emb, out_b.global_emb)


def test_from_pretrained_on_a_non_model_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a medmoe model folder"):
        medmoe.MedMoE.from_pretrained(tmp_path)


def test_real_dicom_through_encode_image(tiny):
    import pydicom.data

    from medmoe.data.io import load_image
    from medmoe.data.transforms import to_model_input

    image = load_image(pydicom.data.get_testdata_file("CT_small.dcm"))
    assert image.shape == (128, 128) and image.min() == 0.0 and image.max() == 1.0
    x = to_model_input(image, tiny.config.image_size)
    assert x.shape == (3, 64, 64)
    with torch.no_grad():
        out = tiny.encode_image(x[None])
    assert torch.isfinite(out.global_emb).all() and torch.isfinite(out.local_map).all()
    assert 0 <= int(out.expert) < tiny.config.num_experts


def test_import_medmoe_is_light():
    import subprocess
    import sys

    code = "import sys, medmoe; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
