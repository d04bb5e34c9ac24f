"""init="medclip:PATH": a checkpoint fabricated in MedCLIP's key layout loads bit-exactly into the
Swin backbone and the text encoder; input normalisation follows; bad files fail in one line."""
import json
import logging

import pytest
import torch
from safetensors.torch import save_file

import medmoe
from medmoe.config import IMAGENET_MEAN, MEDCLIP_MEAN, MEDCLIP_STD, load_config, parse_overrides
from medmoe.data.transforms import ImageTransform
from medmoe.errors import ConfigError

# transformers 4 names (what MedCLIP's pytorch_model.bin was written with) of today's Swin weights
LEGACY_SWIN = [("attention.q_proj", "attention.self.query"), ("attention.k_proj", "attention.self.key"),
               ("attention.v_proj", "attention.self.value"), ("attention.o_proj", "attention.output.dense"),
               ("attention.relative_position_bias.relative_position_bias_table",
                "attention.self.relative_position_bias_table"),
               ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense")]


class NotATensor:  # a pickled object that torch.load(weights_only=True) must refuse
    pass


def legacy(key: str) -> str:
    for new, old in LEGACY_SWIN:
        key = key.replace(new, old)
    return key


@pytest.fixture(scope="module")
def medclip():
    """(Swin state dict, BERT state dict without pooler, MedCLIP-layout checkpoint in transformers-4 names)
    of a SwinModel and a BertModel with the tiny preset's architecture."""
    from transformers import AutoConfig, BertModel, SwinConfig, SwinModel

    from medmoe.model.text import text_architecture

    cfg = load_config("tiny")
    torch.manual_seed(123)
    swin = SwinModel(SwinConfig(image_size=cfg.image_size, **cfg.swin)).state_dict()
    bert = BertModel(AutoConfig.for_model(**text_architecture(cfg.text_model, cfg.text))).state_dict()  # with pooler
    checkpoint = {f"vision_model.model.{legacy(k)}": v for k, v in swin.items()}
    for key in [k for k in checkpoint if k.endswith("relative_position_bias_table")]:  # buffers old versions saved
        checkpoint[key.replace("bias_table", "index")] = torch.zeros(16, dtype=torch.long)
    checkpoint |= {f"text_model.model.{k}": v for k, v in bert.items()}
    checkpoint["text_model.model.embeddings.position_ids"] = torch.arange(512)[None]
    checkpoint |= {"vision_model.projection_head.weight": torch.randn(512, 128),
                   "text_model.projection_head.weight": torch.randn(512, 32), "logit_scale": torch.tensor(3.4)}
    return swin, {k: v for k, v in bert.items() if not k.startswith("pooler.")}, checkpoint


def write(checkpoint, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in checkpoint.items()}, path)
    else:
        torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("name, folder", [("pytorch_model.bin", False), ("model.safetensors", True)])
def test_medclip_weights_load_bit_exactly(medclip, tmp_path, caplog, name, folder):
    swin, bert, checkpoint = medclip
    path = write(checkpoint, tmp_path / "medclip" / name)
    torch.manual_seed(0)
    plain = medmoe.create_model("tiny")
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="medmoe.model.init"):
        model = medmoe.create_model("tiny", init=f"medclip:{path.parent if folder else path}")
    ours = model.image.backbone.swin.swin.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in swin.items())  # SwinModel's final layernorm included
    assert model.text.encoder.state_dict().keys() == bert.keys()
    assert all(torch.equal(model.text.encoder.state_dict()[k], v) for k, v in bert.items())
    kept = {k: v for k, v in model.state_dict().items() if "hidden_states_norms" in k or not k.startswith(
        ("image.backbone.", "text.encoder."))}  # everything MedCLIP does not hold is as a plain build makes it
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in kept.items()) and len(kept) > 20
    assert not torch.equal(plain.image.backbone.swin.swin.embeddings.patch_embeddings.projection.weight,
                           model.image.backbone.swin.swin.embeddings.patch_embeddings.projection.weight)
    log = caplog.text
    assert "image from vision_model.model.*: 8 missing" in log and "hidden_states_norms.stage1.bias" in log
    assert "text from text_model.model.*: 0 missing" in log and "2 unexpected (ignored) [pooler.dense.bias" in log


def test_normalisation_follows_the_init_and_the_saved_model_keeps_the_weights(medclip, tmp_path):
    path = write(medclip[2], tmp_path / "pytorch_model.bin")
    model = medmoe.create_model("tiny", init=f"medclip:{path}")
    assert model.config.image_mean == [MEDCLIP_MEAN] * 3 and model.config.image_std == [MEDCLIP_STD] * 3
    assert ImageTransform.of(model.config).mean == (MEDCLIP_MEAN,) * 3
    assert load_config("tiny").image_mean == list(IMAGENET_MEAN)
    assert load_config("tiny", init="medclip:x", image_mean=[0.5] * 3, image_std=[0.25] * 3).image_mean == [0.5] * 3
    saved = model.save_pretrained(tmp_path / "saved")
    path.unlink()  # from_pretrained must not look for the init file again
    config = json.loads((saved / "config.json").read_text())
    assert config["init"] is None and config["image_std"] == [MEDCLIP_STD] * 3
    again = medmoe.MedMoE.from_pretrained(saved)
    assert again.config.image_mean == [MEDCLIP_MEAN] * 3
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    assert parse_overrides([f"init=medclip:{path}"]) == {"init": f"medclip:{path}"}


def test_files_that_are_not_medclip_checkpoints_fail_in_one_line(medclip, tmp_path):
    swin = write({f"encoder.{k}": v for k, v in medclip[0].items()}, tmp_path / "swin.bin")
    with pytest.raises(ConfigError, match=r"swin.bin is not a MedCLIP checkpoint \(no vision_model.model.\*"):
        medmoe.create_model("tiny", init=f"medclip:{swin}")
    wider = write(medclip[2], tmp_path / "medclip.safetensors")
    with pytest.raises(ConfigError, match=r"image \(vision_model.model.\*\): swin.embeddings.*has shape"):
        medmoe.create_model("tiny", init=f"medclip:{wider}", swin={"embed_dim": 32})
    torch.save({"x": NotATensor()}, tmp_path / "pickle.bin")
    with pytest.raises(ConfigError, match="cannot read .*pickle.bin as a weights file"):
        medmoe.create_model("tiny", init=f"medclip:{tmp_path / 'pickle.bin'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds neither of model.safetensors, pytorch_model.bin"):
        medmoe.create_model("tiny", init=f"medclip:{tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="init must be 'medclip:PATH'"):
        load_config("tiny", init="clip:/x")

