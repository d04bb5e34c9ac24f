"""``medmoe benchmark`` cost at the ``paper`` preset on CPU: seconds per 1,000 test images.

    PYTHONPATH=src python benchmarks/benchmark_command.py [--n 64] [--dataset rsna-pneumonia]

Builds the paper architecture offline (random weights, the same compute; as ``benchmarks/gpu.py``,
Bio_ClinicalBERT's BERT-base from its config with the offline MiniLM tokenizer's vocabulary), writes ``--n`` synthetic 256 x 256 grey PNGs as a manifest of ``--dataset``
and times each part of ``eval.benchmark.evaluate_dataset`` on them: the dataset's prompt bank (once
per dataset), embedding the test images with the prompts' local scores (the zero-shot pass), the
zero-shot scoring, embedding train/val images (the probe's pass, no prompts) and the probe's fits.
Per-image parts are extrapolated linearly to 1,000 images. Prints one JSON object.
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer

from medmoe.config import load_config
from medmoe.data.benchmarks import DATASETS, load_dataset_prompts
from medmoe.data.manifest import read_manifest
from medmoe.eval import DEFAULT_ENSEMBLE, DEFAULT_SCORING
from medmoe.eval.benchmark import PROMPTS_PER_CLASS
from medmoe.eval.embed import embed_rows
from medmoe.eval.probe import linear_probe_scores
from medmoe.eval.zeroshot import embed_prompts, zeroshot_scores
from medmoe.model.medmoe import MedMoE
from medmoe.model.text import resolve_text_source


def synthetic_manifest(folder: Path, name: str, n: int) -> Path:
    """``n`` noise images, classes in turn, split train/val/test as 70/15/15."""
    rng = np.random.default_rng(0)
    classes = DATASETS[name].classes or ("a", "b")
    lines = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(folder / f"{i}.png")
        split = "train" if i % 20 < 14 else "val" if i % 20 < 17 else "test"
        lines.append({"image": f"{i}.png", "report": classes[i % len(classes)], "labels": [classes[i % len(classes)]],
                      "split": split, "modality": DATASETS[name].modality, "dataset": name})
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder / "m.jsonl"


def timed(f):
    start = time.perf_counter()
    out = f()
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="images (default: 64)")
    parser.add_argument("--dataset", default="rsna-pneumonia", choices=list(DATASETS))
    args = parser.parse_args()
    vocab = len(AutoTokenizer.from_pretrained(resolve_text_source("minilm")))
    torch.manual_seed(0)
    model = MedMoE(load_config("paper", text={"vocab_size": vocab}, text_pretrained=False), "minilm").eval()
    rows = read_manifest(synthetic_manifest(Path(tempfile.mkdtemp()), args.dataset, args.n)).rows
    prompts = load_dataset_prompts(args.dataset, n=PROMPTS_PER_CLASS.get(args.dataset))
    bank, t_bank = timed(lambda: embed_prompts(model, prompts["classes"], prompts.get("templates")))
    # every image through both passes, to time them on the same n
    scored, t_scored = timed(lambda: embed_rows(model, rows, prompts=bank))
    _, t_zeroshot = timed(lambda: zeroshot_scores(scored, bank, DEFAULT_SCORING, DEFAULT_ENSEMBLE))
    plain, t_plain = timed(lambda: embed_rows(model, rows))
    _, t_probe = timed(lambda: linear_probe_scores(plain.split("train"), plain.split("test"), plain.split("val")))
    per_1000 = 1000 / args.n
    result = {
        "preset": "paper", "dataset": args.dataset, "images": args.n, "prompts": int(len(bank.prompt_class)),
        "torch_threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2),
        "prompt_bank_s": round(t_bank, 2),
        "zeroshot_pass_s_per_1000": round(t_scored * per_1000, 1),
        "zeroshot_scoring_s_per_1000": round(t_zeroshot * per_1000, 2),
        "probe_pass_s_per_1000": round(t_plain * per_1000, 1),
        "probe_fits_s": round(t_probe, 2),
        "test_images_per_s": round(args.n / (t_scored + t_zeroshot), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
