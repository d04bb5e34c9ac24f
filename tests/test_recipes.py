"""Training recipes as data, the optimiser/schedule they choose, GLoRIA's text cleaning, and the
measures for routing on imbalanced data (balanced sampling, class-weighted auxiliary loss, router
learning rate)."""
import json
from collections import Counter

import pytest
import torch

import medmoe
from medmoe import registry
from medmoe.config import load_config
from medmoe.data.dataset import ResumableBatches
from medmoe.errors import ConfigError
from medmoe.cli import main
from medmoe.model.text import gloria_clean
from medmoe.runs import latest_checkpoint
from medmoe.train.args import TrainArgs
from medmoe.train.loop import aux_class_weights
from medmoe.train.optim import build_optimizer, build_scheduler


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    from medmoe.data.synth import generate

    return generate(tmp_path_factory.mktemp("skewed"), n=200, seed=4, size=64, progress=False,
                    mix={"xray": 0.7, "ct": 0.2, "mri": 0.07, "ultrasound": 0.03})


def test_recipes_are_data_and_set_model_and_training_settings():
    assert {"default", "paper", "gloria"} <= set(registry.names("recipes"))
    paper = load_config("tiny", recipe="paper")
    assert (paper.w_global, paper.w_local, paper.w_aux, paper.freeze_text, paper.text_clean) == (
        0.5, 0.5, 2.0, True, "gloria")
    assert load_config("tiny", recipe="paper", w_aux=1.0).w_aux == 1.0  # explicit settings win
    args = TrainArgs.from_recipe(recipe="paper", data="d", out="o", lr=1e-4)
    assert (args.optimizer, args.schedule, args.clip_grad, args.epochs, args.lr, args.recipe) == (
        "adam", "plateau", 0.25, 10, 1e-4, "paper")
    assert TrainArgs.from_recipe(data="d", out="o") == TrainArgs(data="d", out="o")
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_config("tiny", recipe="nope")
    with pytest.raises(ConfigError, match="unknown recipe"):
        TrainArgs.from_recipe(recipe="nope", data="d", out="o")
    with pytest.raises(ConfigError, match="schedule"):
        TrainArgs(data="d", out="o", schedule="step")


def test_optimizer_groups_and_router_learning_rate():
    torch.manual_seed(0)
    model = medmoe.create_model("tiny", freeze_text=True)
    args = TrainArgs(data="d", out="o", optimizer="adam", lr=1e-3, weight_decay=0.1, router_lr_mult=10.0)
    opt = build_optimizer(model, args)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    routers = {id(p) for r in (model.gate.image_router, model.gate.text_router) for p in r.parameters()}
    for group in opt.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= routers or not ids & routers  # routers in groups of their own
        assert group["lr"] == (1e-2 if ids <= routers else 1e-3)
        assert group["weight_decay"] == (0.0 if all(p.ndim < 2 for p in group["params"]) else 0.1)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in trained for p in model.text.encoder.parameters())  # frozen text encoder
    assert len(build_optimizer(model, TrainArgs(data="d", out="o")).param_groups) == 2  # as before without a mult


def test_plateau_schedule_halves_the_learning_rate_when_the_loss_stalls():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=1.0)
    sched = build_scheduler(opt, TrainArgs(data="d", out="o", schedule="plateau", plateau_patience=1), steps=10)
    for loss in (1.0, 0.5, 0.6, 0.7):
        sched.step(loss)
    assert opt.param_groups[0]["lr"] == 0.5


def test_gloria_text_cleaning():
    report = "1. Moderate left pleural Effusion. 2. No pneumothorax. Heart size is NORMAL.\nSee note."
    assert gloria_clean(report) == "moderate left pleural effusion heart size is normal"
    assert gloria_clean("Edème. Normal.") == "edme normal"  # nothing long enough: all ASCII words kept
    model = medmoe.create_model("tiny", text_clean="gloria").eval()
    assert model.encode_text(["No pneumothorax. Heart size is normal."]).tokens == [["heart", "size", "is", "normal"]]


def test_balanced_sampler_draws_every_group_equally_often_and_resumes_exactly():
    groups = [0] * 90 + [1] * 8 + [2] * 2
    full = [b for b, _ in zip(ResumableBatches(100, 10, seed=1, groups=groups), range(60))]
    drawn = Counter(groups[i] for batch in full for i, _ in batch)
    assert all(abs(drawn[g] / 600 - 1 / 3) < 0.05 for g in range(3))
    resumed = [b for b, _ in zip(ResumableBatches(100, 10, seed=1, start=25, groups=groups), range(5))]
    assert resumed == full[25:30]
    plain = Counter(groups[i] for batch, _ in zip(ResumableBatches(100, 10, seed=1), range(10)) for i, _ in batch)
    assert plain[0] == 90  # without groups: each epoch a permutation, as before


def test_aux_class_weights_are_inverse_frequency_per_expert():
    model = medmoe.create_model("tiny", num_experts=2)  # xray, mri -> expert 0; ct, ultrasound -> expert 1
    w = aux_class_weights(model, {"xray": 60, "mri": 20, "ct": 15, "ultrasound": 5, "unknown": 7})
    torch.testing.assert_close(w, torch.tensor([100 / (2 * 80), 100 / (2 * 20)]))


@pytest.mark.slow
def test_train_with_the_paper_recipe_balanced_from_the_command_line(tmp_path, skewed):
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--recipe", "paper", "--data", str(skewed), "--out", str(run),
                 "--epochs", "0.2", "--batch-size", "8", "--eval-every", "2", "--workers", "0", "--quiet",
                 "--balance", "modality", "--aux-class-weight", "--router-lr-mult", "5", "--lr", "1e-4"]) == 0
    saved = json.loads((run / "train_args.json").read_text())
    assert (saved["recipe"], saved["optimizer"], saved["schedule"], saved["clip_grad"], saved["lr"]) == (
        "paper", "adam", "plateau", 0.25, 1e-4)
    config = json.loads((latest_checkpoint(run) / "model" / "config.json").read_text())
    assert (config["w_aux"], config["freeze_text"], config["text_clean"]) == (2.0, True, "gloria")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "val"] == [2, 4] and all(
        r["loss"] > 0 for r in lines if r["split"] == "val")  # the plateau schedule's validation loss
    assert main(["train", "--preset", "tiny", "--recipe", "paper", "--data", str(skewed), "--out", str(tmp_path / "x"),
                 "--val", str(tmp_path / "none.jsonl"), "--steps", "1"]) != 0


def test_balanced_shard_stream_evens_out_modalities(tmp_path, skewed):
    from medmoe.data.shards import shard_batches, write_shards
    from medmoe.data.transforms import ImageTransform

    write_shards(skewed, tmp_path / "shards", shard_size=50, progress=False)
    transform, modalities = ImageTransform.of(load_config("tiny")), load_config("tiny").modalities

    def seen(balance, steps=12):
        batches = iter(shard_batches(tmp_path / "shards", transform, modalities, 16, seed=0, balance=balance))
        return Counter(int(m) for _ in range(steps) for m in next(batches)["modality"])

    plain, balanced = seen(False), seen(True)
    assert plain[0] / sum(plain.values()) > 0.5  # x-ray dominates the raw stream
    assert all(balanced[m] / sum(balanced.values()) < 0.4 for m in range(4)) and balanced[3] > plain[3]
    resumed = shard_batches(tmp_path / "shards", transform, modalities, 16, seed=0, start_step=5, balance=True)
    first = iter(shard_batches(tmp_path / "shards", transform, modalities, 16, seed=0, balance=True))
    expected = [next(first) for _ in range(6)][-1]
    assert next(iter(resumed))["rows"] == expected["rows"]
