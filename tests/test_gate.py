"""The gate (routing policy, modality table, Route statistics), the shared expert and sparse upcycling."""
import json
import math

import pytest
import torch

import medmoe
from medmoe.cli import main
from medmoe.config import load_config
from medmoe.eval.flops import image_side_cost
from medmoe.losses import MedMoELoss
from medmoe.model.gate import Route
from medmoe.runs import latest_checkpoint

REPORTS = ["No pleural effusion.", "Hypodense lesion in the liver.", "Small T2 hyperintense focus.", "Hypoechoic nodule."]


def images(n, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_route_statistics_are_load_entropy_and_accuracy():
    uniform, sure = torch.zeros(4, 2), torch.tensor([[9.0, -9.0], [9.0, -9.0], [-9.0, 9.0], [9.0, -9.0]])
    route = Route(torch.tensor([0, 0, 1, 0]), None, uniform, sure, torch.tensor([0, 1, 1, -1]))
    stats = route.stats()
    assert stats["load"] == [0.75, 0.25]
    assert stats["entropy_image"] == pytest.approx(math.log(2)) and stats["entropy_text"] == pytest.approx(0, abs=1e-6)
    assert stats["accuracy_text"] == pytest.approx(2 / 3)  # rows 0 and 2 right, row 1 wrong, row 3 unknown
    assert stats["accuracy_image"] == pytest.approx(1 / 3)  # a tie: argmax 0
    assert "accuracy_image" not in Route(route.expert, None, uniform, None, None).stats()
    both = Route.cat([route, route])
    assert both.expert.tolist() == [0, 0, 1, 0] * 2 and both.text_logits.shape == (8, 2) and both.weights is None


def test_training_forward_returns_the_loss_inputs_with_the_route(tiny):
    modality = tiny.gate.modality_index(["xray", "ct", "mri", "fundus"])
    with torch.no_grad():
        out = tiny(images(4), REPORTS, modality)
    assert set(out) == {"image_global", "text_global", "regions", "words", "lengths", "route"}
    assert out["route"].target.tolist() == [0, 1, 2, -1] and len(out["route"].logits) == 2
    loss = MedMoELoss.from_config(tiny.config)(**out)
    assert loss["aux"] > 0 and torch.isfinite(loss["total"])


def test_the_shared_expert_runs_on_every_sample_beside_the_routed_one():
    torch.manual_seed(0)
    model = medmoe.create_model("tiny", shared_expert=True).eval()
    mixture = model.image.experts
    seen = []
    mixture.shared.project[0][0].register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    x, expert = images(5), torch.tensor([2, 2, 0, 3, 0])
    with torch.no_grad():
        routed = model.encode_image(x, expert=expert)
        _, every, _ = model.encode_image_all_experts(x)
        pyramid, _ = model.image.features(x)
        shared = mixture.shared(pyramid)
        alone = mixture.experts[2]([f[:1] for f in pyramid])
    assert seen[0] == 5
    torch.testing.assert_close(routed.local_map, every[expert, torch.arange(5)])
    torch.testing.assert_close(routed.local_map[:1], alone + shared[:1])  # the routed map plus the shared one
    costs = {flag: image_side_cost(load_config("small", shared_expert=flag))
             for flag in (False, True)}
    assert costs[True]["params_active"] > costs[False]["params_active"]
    assert costs[True]["gmacs_active"] > costs[False]["gmacs_active"]


def test_before_the_split_one_expert_serves_every_sample_and_after_it_all_are_copies(tmp_path):
    torch.manual_seed(0)
    model = medmoe.create_model("tiny", expert_init="upcycle", upcycle_step=3)
    assert not model.gate.upcycled
    with torch.no_grad():
        route = model(images(4), REPORTS, model.gate.modality_index(["xray", "ct", "mri", "ultrasound"]))["route"]
        assert route.expert.tolist() == [0, 0, 0, 0] and route.target.tolist() == [0, 1, 2, 3]  # routers still learn
        model.train()
        model(images(8, seed=1), REPORTS * 2)  # expert 0's batch norm statistics move off their init
        model.eval()
        model.upcycle()
        pyramid, _ = model.image.features(images(3))
        outputs = [e(pyramid) for e in model.image.experts.experts]
    assert model.gate.upcycled
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])
    model.save_pretrained(tmp_path / "m")
    assert medmoe.MedMoE.from_pretrained(tmp_path / "m").gate.upcycled


def test_models_saved_before_the_gate_load(tiny, tmp_path):
    """Weights written before the gate held the routers (image.router.*, text_router.*, no upcycled flag)."""
    from safetensors.torch import load_file, save_file

    tiny.save_pretrained(tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    old = {k.replace("gate.image_router.", "image.router.").replace("gate.text_router.", "text_router."): v
           for k, v in state.items() if k != "gate.upcycled"}
    save_file(old, tmp_path / "m" / "model.safetensors")
    loaded = medmoe.MedMoE.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.gate.image_router.mlp[0].weight, tiny.gate.image_router.mlp[0].weight)
    assert loaded.gate.upcycled


@pytest.fixture(scope="module")
def medsynth(tmp_path_factory):
    from medmoe.data.synth import generate

    return generate(tmp_path_factory.mktemp("medsynth"), n=120, seed=5, size=64, progress=False)


def upcycle_argv(data, out, steps, *extra):
    return ["train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--steps", str(steps),
            "--batch-size", "8", "--checkpoint-every", "3", "--eval-every", "100", "--log-every", "2", "--quiet",
            "--set", "expert_init=upcycle", "--set", "upcycle_step=4", "--set", "shared_expert=true", *extra]


@pytest.mark.slow
def test_the_upcycling_split_is_exact_across_a_resume_and_logs_the_routing(tmp_path, medsynth):
    from safetensors.torch import load_file

    def weights(run):
        return load_file(latest_checkpoint(run) / "model" / "model.safetensors")

    assert main(upcycle_argv(medsynth, tmp_path / "straight", 8)) == 0
    assert main(upcycle_argv(medsynth, tmp_path / "stopped", 8, "--stop-at", "3")) == 0  # before the split
    early = weights(tmp_path / "stopped")
    assert not early["gate.upcycled"] and not torch.equal(early["image.experts.experts.0.head.1.weight"],
                                                          early["image.experts.experts.1.head.1.weight"])
    assert main(upcycle_argv(medsynth, tmp_path / "stopped", 8, "--resume", str(tmp_path / "stopped"))) == 0
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "stopped")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["gate.upcycled"]
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["route_load"][0] for r in train if r["step"] <= 4] == [1.0, 1.0]  # one expert before the split
    assert all(len(r["route_load"]) == 4 and 0 <= r["route_entropy_text"] <= math.log(4) + 1e-6
               and 0 <= r["route_accuracy_image"] <= 1 for r in train)


@pytest.mark.parametrize("detach", [False, True])
def test_detached_routers_keep_the_auxiliary_loss_out_of_the_encoders(detach):
    torch.manual_seed(0)
    model = medmoe.create_model("tiny", detach_routers=detach).train()
    out = model(images(4), REPORTS, model.gate.modality_index(["xray", "ct", "mri", "ultrasound"]))
    MedMoELoss(w_global=0.0, w_local=0.0)(**out)["aux"].backward()  # the auxiliary loss alone
    routers = [p.grad for r in (model.gate.image_router, model.gate.text_router) for p in r.parameters()]
    encoders = [p.grad for part in (model.image.backbone, model.text.encoder) for p in part.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in routers)
    assert any(g is not None and g.abs().sum() > 0 for g in encoders) != detach
