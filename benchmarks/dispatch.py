"""Cost of hard top-1 dispatch: one forward+backward of the image side at the `small` preset.

Compares K=6 grouped dispatch (each sample runs only its expert), K=1, and K=6 computing every
expert and keeping one (the authors' code). Prints JSON; the goal is grouped K=6 within 1.25x
of K=1. Usage: python benchmarks/dispatch.py [--batch 32] [--repeats 7] [--threads 2]
"""
import argparse
import json
import statistics
import time

import torch

from medmoe.config import load_config
from medmoe.model.medmoe import MedMoE


def step(model, images, expert, all_experts):
    """One forward+backward of the image side; returns its wall time."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    if all_experts:
        global_emb, every, _ = model.encode_image_all_experts(images)
        local = every[expert, torch.arange(len(images))]
    else:
        out = model.encode_image(images, expert)
        global_emb, local = out.global_emb, out.local_map
    (global_emb.square().mean() + local.square().mean()).backward()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = load_config(args.preset).image_size
    images = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    result = {"preset": args.preset, "batch": args.batch, "threads": args.threads, "repeats": args.repeats}
    variants = {}
    for name, k, every in [("k1", 1, False), ("k6_grouped", 6, False), ("k6_all_experts", 6, True)]:
        torch.manual_seed(0)
        model = MedMoE(load_config(args.preset, num_experts=k, text_pretrained=False)).train()
        expert = torch.arange(args.batch) % k  # balanced load: the grouped path's worst case
        variants[name] = (model, images, expert, every)
        step(*variants[name])  # warm-up
    times = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so a slow phase of the machine hits all variants alike
        for name, v in variants.items():
            times[name].append(step(*v))
    for name, t in times.items():
        result[f"{name}_s"] = round(statistics.median(t), 4)
    result["grouped_over_k1"] = round(result["k6_grouped_s"] / result["k1_s"], 3)
    result["all_over_grouped"] = round(result["k6_all_experts_s"] / result["k6_grouped_s"], 3)
    result["goal_grouped_within_1.25x_of_k1"] = result["grouped_over_k1"] <= 1.25
    print(json.dumps(result))


if __name__ == "__main__":
    main()
