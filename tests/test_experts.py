import pytest
import torch

import medmoe
from medmoe.model.experts import Expert

REPORTS = ["No pleural effusion.", "Hypodense lesion in the liver.", "Small T2 hyperintense focus.", "Hypoechoic nodule."]


def images(n, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_grouped_dispatch_equals_running_every_expert_and_selecting(tiny):
    x = images(7)
    expert = torch.tensor([3, 0, 3, 1, 0, 2, 3])
    with torch.no_grad():
        routed = tiny.encode_image(x, expert=expert)
        _, every, route = tiny.encode_image_all_experts(x)
    torch.testing.assert_close(routed.local_map, every[expert, torch.arange(7)])
    torch.testing.assert_close(routed.router_logits, route.image_logits)
    assert torch.equal(routed.expert, expert)


def test_dispatch_runs_each_selected_expert_once_on_its_own_rows_only(tiny):
    seen = {}
    hooks = [e.project[0][0].register_forward_hook(lambda m, a, o, k=k: seen.setdefault(k, []).append(a[0].shape[0]))
             for k, e in enumerate(tiny.image.experts.experts)]  # each expert's first layer
    try:
        with torch.no_grad():
            tiny.encode_image(images(5), expert=torch.tensor([2, 2, 0, 2, 0]))
    finally:
        for h in hooks:
            h.remove()
    assert seen == {0: [2], 2: [3]}  # experts 1 and 3 never run


def test_without_a_report_the_image_router_decides(tiny):
    with torch.no_grad():
        out = tiny.encode_image(images(6))
    assert torch.equal(out.expert, out.router_logits.argmax(1))
    assert out.global_emb.shape == (6, 32) and out.local_map.shape == (6, 32, 16, 16)


@pytest.mark.parametrize("routing", ["text", "label", "image"])
def test_each_routing_source_drives_dispatch(routing):
    torch.manual_seed(0)
    model = medmoe.create_model("tiny", routing=routing).eval()
    modality = model.gate.modality_index(["xray", "ct", "mri", None])
    with torch.no_grad():
        route = model(images(4), REPORTS, modality)["route"]
        image_choice = model.encode_image(images(4)).expert
        text_choice = model.encode_text(REPORTS).router_logits.argmax(1)
    assert torch.equal(route.target, torch.tensor([0, 1, 2, -1]))
    if routing == "text":
        assert torch.equal(route.expert, text_choice)
    elif routing == "label":  # labelled rows follow their modality's expert; the unlabelled one the report
        assert route.expert[:3].tolist() == [0, 1, 2]
        assert route.expert[3] == text_choice[3]
    else:
        assert torch.equal(route.expert, image_choice)


def test_label_routing_maps_more_modalities_than_experts_onto_experts():
    model = medmoe.create_model("tiny", num_experts=2)
    targets = model.gate.expert_of(model.gate.modality_index(["xray", "ct", "mri", "ultrasound", "fundus"]))
    assert targets.tolist() == [0, 1, 0, 1, -1]


def test_label_routing_without_labels_is_a_clear_error():
    model = medmoe.create_model("tiny", routing="label")
    with pytest.raises(ValueError, match="modality"):
        model(images(2), REPORTS[:2])


@pytest.mark.parametrize("overrides", [{"moe": False}, {"num_experts": 1}])
def test_baselines_build_train_and_backpropagate(overrides):
    torch.manual_seed(0)
    model = medmoe.create_model("tiny", **overrides).train()
    out = model(images(4), REPORTS)
    assert out["regions"].shape == (4, 32, 16, 16)
    (out["regions"].square().mean() + out["image_global"].square().mean() + out["words"].square().mean()).backward()
    head = model.image.head if overrides.get("moe") is False else model.image.experts.experts[0]
    # the scorer's last bias adds the same logit to every scale: the softmax over scales cancels it, so
    # its gradient is zero up to rounding (nonzero or not depending on the thread count)
    trained = [p for name, p in head.named_parameters() if name != "scale_scorer.2.bias"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    if overrides.get("moe") is False:
        assert out["route"] is None and model.gate is None
    else:
        assert out["route"].expert.tolist() == [0, 0, 0, 0]


def test_scale_attention_is_a_softmax_over_scales_per_location():
    torch.manual_seed(0)
    expert = Expert([8, 16, 32, 64], dim=12, grid=8, attn_dim=6).eval()
    pyramid = [torch.randn(2, c, 8 // 2**i, 8 // 2**i) for i, c in enumerate([8, 16, 32, 64])]
    scales = torch.stack(expert.scale_maps(pyramid), dim=1)
    beta = expert.scale_weights(list(scales.unbind(1)))
    assert scales.shape == (2, 4, 12, 8, 8) and beta.shape == (2, 4, 8, 8)
    torch.testing.assert_close(beta.sum(1), torch.ones(2, 8, 8))
    fused = (beta.unsqueeze(2) * scales).sum(1)
    torch.testing.assert_close(expert(pyramid), expert.head(fused))


def test_scale_resize_is_two_dimensional():
    """A coarse map with a vertical edge must stay a vertical edge after resizing (1-D token
    interpolation, as in the authors' code, would smear it across rows)."""
    expert = Expert([1], dim=1, grid=8, attn_dim=1)
    with torch.no_grad():
        conv, bn = expert.project[0][0], expert.project[0][1]
        conv.weight.fill_(1.0)
        bn.eval()
    coarse = torch.zeros(1, 1, 4, 4)
    coarse[..., 2:] = 1.0
    up = expert.scale_maps([coarse])[0][0, 0]
    assert torch.allclose(up, up[0].expand(8, 8))  # every row identical
    assert up[0, 0] < up[0, -1]


@pytest.mark.parametrize("source", ["expert", "backbone"])
def test_global_embedding_comes_from_the_routed_expert_or_the_backbone(source):
    torch.manual_seed(0)
    model = medmoe.create_model("tiny", global_source=source).eval()
    x = images(4)
    with torch.no_grad():
        a = model.encode_image(x, expert=torch.tensor([0, 1, 2, 3]))
        b = model.encode_image(x, expert=torch.tensor([1, 2, 3, 0]))
        ref, every, _ = model.encode_image_all_experts(x)
        routed = model.encode_image(x)
    assert not torch.allclose(a.local_map, b.local_map)
    assert torch.allclose(a.global_emb, b.global_emb) == (source == "backbone")
    if source == "expert":  # v_g is the projected mean of the routed map
        torch.testing.assert_close(a.global_emb, model.image.global_proj(a.local_map.mean(dim=(2, 3))))
    torch.testing.assert_close(routed.global_emb, ref)  # grouped dispatch = all experts, then select


def test_channels_last_maps_and_in_place_fusion_match_the_plain_formula_with_gradients():
    """The expert on channels-last maps with the scales fused in place (what runs) against the plain
    formula head(sum_l beta_l * F_l) on contiguous maps: same outputs and gradients to 1e-5."""
    torch.manual_seed(0)
    expert = Expert([8, 16, 32, 64], dim=12, grid=8, attn_dim=6).train()
    pyramid = [torch.randn(3, c, 8 // 2**i, 8 // 2**i) for i, c in enumerate([8, 16, 32, 64])]
    weight = torch.randn(3, 12, 8, 8)

    def run(maps, plain):
        expert.zero_grad()
        inputs = [m.clone().requires_grad_() for m in maps]
        if plain:
            scales = expert.scale_maps(inputs)
            beta = expert.scale_weights(scales)
            out = expert.head(sum(beta[:, l : l + 1] * m for l, m in enumerate(scales)))
        else:
            out = expert(inputs)
        (out * weight).sum().backward()
        return out, [x.grad for x in inputs] + [p.grad for p in expert.parameters()]

    fast, fast_grads = run([m.contiguous(memory_format=torch.channels_last) for m in pyramid], plain=False)
    ref, ref_grads = run(pyramid, plain=True)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, ref_grads):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
