import json

import pytest
import torch

from medmoe.cli import main
from medmoe.config import load_config
from medmoe.eval.flops import count_gmacs, image_side_cost


@pytest.mark.slow  # builds the 39 M-parameter paper preset
def test_paper_preset_meets_the_table_3_budget(tmp_path):
    """Table 3: 37 M parameters with all experts (+-10 %), 7.8 GMACs with one active (+-15 %)."""
    assert main(["flops", "--preset", "paper", "--json", str(tmp_path / "flops.json")]) == 0
    cost = json.loads((tmp_path / "flops.json").read_text())
    assert set(cost) == {"params_total", "params_active", "gmacs_active", "gmacs_all_experts"}
    assert abs(cost["params_total"] / 37e6 - 1) <= 0.10
    assert abs(cost["gmacs_active"] / 7.8 - 1) <= 0.15
    assert cost["gmacs_all_experts"] > 2.5 * cost["gmacs_active"]  # what running all 6 experts would cost


def test_counts_scale_with_the_experts():
    from medmoe.model.experts import Expert

    cfg = load_config("tiny")
    static = image_side_cost(load_config("tiny", moe=False))
    one = image_side_cost(load_config("tiny", num_experts=1))
    four = image_side_cost(load_config("tiny", num_experts=4))
    e = cfg.swin["embed_dim"]
    expert = Expert([e, 2 * e, 4 * e, 8 * e], cfg.embed_dim, cfg.grid_size, cfg.scale_attn_dim).eval()
    expert_params = sum(p.numel() for p in expert.parameters())
    pyramid = [torch.zeros(1, e * 2**i, cfg.image_size // 2 ** (i + 2), cfg.image_size // 2 ** (i + 2))
               for i in range(4)]
    with torch.no_grad():
        expert_gmacs = count_gmacs(lambda: expert(pyramid))
    assert four["params_total"] - four["params_active"] == 3 * expert_params
    assert one["params_active"] == one["params_total"] and one["gmacs_all_experts"] == one["gmacs_active"]
    assert static["params_total"] == static["params_active"] < one["params_total"]
    assert expert_gmacs > 0
    assert abs((four["gmacs_all_experts"] - four["gmacs_active"]) - 3 * expert_gmacs) < 3e-4
    shared = image_side_cost(load_config("tiny", num_experts=4, shared_expert=True))  # Table 3's row with it
    assert shared["params_total"] - four["params_total"] == shared["params_active"] - four["params_active"] == \
        expert_params  # always active: one more expert's parameters and multiply-adds, per image
    assert abs((shared["gmacs_active"] - four["gmacs_active"]) - expert_gmacs) < 3e-4
