"""Inference throughput of ``encode_image`` (small and paper presets) and the train-step cost of MedMoE
relative to the static baseline (same preset, batch and data, interleaved, one run).

    PYTHONPATH=src python benchmarks/inference.py [--batch 16] [--repeats 5] [--threads 2]

Prints one JSON object. Random-init weights (speed does not depend on them).
"""
import argparse
import contextlib
import json
import statistics
import time

import torch

from medmoe.config import load_config
from medmoe.losses import MedMoELoss
from medmoe.model.medmoe import MedMoE
from medmoe.train.step import forward_backward

REPORT = "Frontal chest radiograph. Moderate left pleural effusion. No pneumothorax. Heart size is normal."


def median_seconds(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def encode_images_per_s(preset, batch, repeats):
    torch.manual_seed(0)
    model = MedMoE(load_config(preset, text_pretrained=False)).eval()  # the architecture is all it times
    size = model.config.image_size
    images = torch.randn(batch, 3, size, size)

    def run():
        with torch.inference_mode():
            model.encode_image(images)

    return round(batch / median_seconds(run, repeats), 2)


def train_step(model, criterion, batch):
    model.zero_grad(set_to_none=True)
    forward_backward(model, criterion, [batch | {"tokens": model.text.tokenize(batch["reports"])}],
                     torch.device("cpu"), contextlib.nullcontext, seed=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = {"batch": args.batch, "threads": args.threads, "repeats": args.repeats, "device": "cpu"}
    for preset in ("small", "paper"):
        result[f"encode_image_{preset}_images_per_s"] = encode_images_per_s(preset, args.batch, args.repeats)

    batch = {"images": torch.randn(args.batch, 3, 96, 96), "reports": [REPORT] * args.batch,
             "modality": torch.arange(args.batch) % 4}
    steps, times = {}, {}
    for variant in ("medmoe", "static"):
        torch.manual_seed(0)
        model = MedMoE(load_config("small", variant)).train()
        steps[variant] = lambda m=model: train_step(m, MedMoELoss(), batch)
        steps[variant]()  # warm-up
        times[variant] = []
    for _ in range(args.repeats):  # interleaved: a slow phase of the machine hits both alike
        for variant, step in steps.items():
            start = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - start)
    for variant, t in times.items():
        result[f"train_step_small_{variant}_s"] = round(statistics.median(t), 4)
    result["train_step_medmoe_over_static"] = round(result["train_step_small_medmoe_s"]
                                                    / result["train_step_small_static_s"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
