"""Training and inference throughput at the ``paper`` preset (Swin-T, K=6, D=768, 56x56 grid):
MedMoE (global + local + auxiliary losses, routed experts) against a Swin-T + BERT model trained
with the global loss only, and ``encode_image``; bf16 autocast on GPU (TF32 on), fp32 on CPU.

    PYTHONPATH=src python benchmarks/gpu.py --out results.json              # on a GPU
    PYTHONPATH=src python benchmarks/gpu.py --device cpu --preset tiny      # a quick CPU check

Random-init weights and random images (speed does not depend on them); the reports are real
sentences so tokenisation and word merging cost what they cost. Prints one JSON object.
"""
import argparse
import contextlib
import json
import resource
import time
from pathlib import Path

import torch

from medmoe.config import load_config
from medmoe.losses import MedMoELoss, global_contrastive_loss
from medmoe.model.medmoe import MedMoE
from medmoe.model.text import resolve_text_source
from medmoe.train.loop import autocast_for
from medmoe.train.step import forward_backward

REPORTS = ["Frontal chest radiograph. Moderate left pleural effusion. No pneumothorax. Heart size is normal.",
           "Axial T2 weighted images show a hyperintense lesion in the right frontal lobe with surrounding edema.",
           "Contrast-enhanced CT of the abdomen: 3 cm hypodense lesion in segment 7 of the liver.",
           "Transabdominal ultrasound: hypoechoic solid nodule in the left thyroid lobe, 12 mm, no calcification."]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def images_per_s(step, batch, device, warmup, steps) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return round(batch * steps / (time.perf_counter() - start), 2)


def peak_memory_gb(device) -> float:
    """Peak GPU memory allocated since the last reset; on CPU the process's peak resident set."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def measure(name, step, batch, device, args) -> dict:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rate = images_per_s(step, batch, device, args.warmup, args.steps)
    result = {f"{name}_images_per_s": rate, f"{name}_peak_memory_gb": peak_memory_gb(device)}
    print(json.dumps(result), flush=True)
    return result


def build(config, device, tokenizer):
    torch.manual_seed(0)
    model = MedMoE(config, tokenizer).to(device).train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, default=32, help="training batch (default: 32, as 256 / 8 GPUs)")
    parser.add_argument("--infer-batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the offline MiniLM package's)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="then compile the backbone and text encoder (medmoe.model.compile) and measure the "
                        "training step and encode_image again (gpu.sh passes it; --no-compile after it turns it off)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--save-tokenizer", metavar="DIR", help="only copy the MiniLM tokenizer to DIR (to carry it "
                        "to a machine without the package) and exit")
    args = parser.parse_args()
    if args.save_tokenizer:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(resolve_text_source("minilm")).save_pretrained(args.save_tokenizer)
        return

    device = torch.device(args.device)
    autocast = autocast_for(device, args.precision)
    tokenizer = args.tokenizer or "minilm"
    # the paper's text encoder is BERT-base (Bio_ClinicalBERT) built from its config, with the vocabulary
    # of the tokenizer at hand, so nothing is fetched
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(resolve_text_source(tokenizer)))
    config = load_config(args.preset, text={"vocab_size": vocab}, text_pretrained=False)
    size = config.image_size
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "preset": args.preset, "precision": "bf16" if autocast is not contextlib.nullcontext else "fp32",
              "batch": args.batch, "infer_batch": args.infer_batch, "image_size": size, "torch": torch.__version__}
    print(json.dumps(result), flush=True)

    images = torch.randn(args.batch, 3, size, size, device=device)
    reports = [REPORTS[i % len(REPORTS)] for i in range(args.batch)]
    modality = torch.arange(args.batch) % 4
    batch = {"images": images, "reports": reports, "modality": modality}

    model, optimizer = build(config, device, tokenizer)
    criterion = MedMoELoss.from_config(config)
    batch["tokens"] = model.text.tokenize(reports)

    def medmoe_step():
        optimizer.zero_grad(set_to_none=True)
        forward_backward(model, criterion, [batch], device, autocast, seed=0)
        optimizer.step()

    result |= measure("train_medmoe", medmoe_step, args.batch, device, args)

    pooled_proj = torch.nn.Linear(model.image.backbone.channels[-1], config.embed_dim).to(device)
    optimizer.add_param_group({"params": list(pooled_proj.parameters())})

    def global_only_step():  # Swin-T pooled features -> projection, report -> t_g, global loss only
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            _, pooled = model.image.features(images)
            text = model.text(batch["tokens"])[0]
            loss = sum(global_contrastive_loss(pooled_proj(pooled), text, config.temp3))
        loss.backward()
        optimizer.step()

    result |= measure("train_global_only", global_only_step, args.batch, device, args)
    result["train_medmoe_vs_global_only"] = round(
        result["train_medmoe_images_per_s"] / result["train_global_only_images_per_s"], 3)

    del optimizer
    model.eval()
    infer_images = torch.randn(args.infer_batch, 3, size, size, device=device)

    def encode():
        with torch.inference_mode(), autocast():
            model.encode_image(infer_images)

    result |= measure("encode_image", encode, args.infer_batch, device, args)
    if args.compile:  # the same steps with the backbone and text encoder compiled, in the same precision
        from medmoe.model.compile import compile_model

        model.train()
        compile_model(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        result |= measure("train_medmoe_compiled", medmoe_step, args.batch, device, args)
        model.eval()
        result |= measure("encode_image_compiled", encode, args.infer_batch, device, args)
        for name in ("train_medmoe", "encode_image"):
            result[f"{name}_compile_speedup"] = round(result[f"{name}_compiled_images_per_s"]
                                                      / result[f"{name}_images_per_s"], 3)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
