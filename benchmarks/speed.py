"""Where the time goes at the ``paper`` preset (Swin-T at 224 px, K=6, D=768, 56 x 56 grid), as ratios of
two things measured in one interleaved run (issue 18):

- ``image``: ``encode_image`` against a plain Swin-T (``transformers.SwinModel``, the same stages, the
  same input, random weights): the time ratio beside the ratio of multiply-adds (torch's flop counter),
  and their quotient (goal: at most 1.25);
- ``train``: one MedMoE training step (global + local + auxiliary losses, routed experts, backward)
  against Swin-T + BERT trained with the global loss only (goal: at least 0.5 x its speed), beside the ratio
  of their multiply-adds (forward + backward);
- ``zeroshot``: scoring every prompt of the shipped RSNA prompt file (317) with the default scoring
  against encoding the same images (goal: at most 0.5 x the encoding), and beside it the word-region
  logits alone (every prompt word against every region, one matmul): the floor of any exact scoring;
  each beside its multiply-add ratio;
- ``bf16`` (``--parts bf16``): one training step under bf16 autocast on CPU (``--precision bf16``) against
  float32, for MedMoE and for the Swin-T + BERT global-only model on the same batch: the speed-up and the
  error of the losses and of the gradient (relative L2 over all parameters, and the cosine);
- ``--compile``: ``encode_image`` with the backbone and text encoder compiled (``model/compile.py``) against eager;
- ``--memory``: the peak resident memory of one training step at batch 32 (a fresh process each).

    PYTHONPATH=src python benchmarks/speed.py [--parts image train zeroshot bf16] [--repeats 3] [--compile] [--memory]

Random-init weights (speed does not depend on them); the text side is BERT-base (Bio_ClinicalBERT's
architecture) with the offline MiniLM tokenizer's vocabulary, so nothing is downloaded. Prints JSON lines.
"""
import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from medmoe.config import load_config, parse_overrides
from medmoe.losses import MedMoELoss, global_contrastive_loss
from medmoe.model.medmoe import MedMoE
from medmoe.model.text import resolve_text_source
from medmoe.train.step import forward_backward

REPORTS = ["Frontal chest radiograph. Moderate left pleural effusion. No pneumothorax. Heart size is normal.",
           "Axial T2 weighted images show a hyperintense lesion in the right frontal lobe with surrounding edema.",
           "Contrast-enhanced CT of the abdomen: 3 cm hypodense lesion in segment 7 of the liver.",
           "Transabdominal ultrasound: hypoechoic solid nodule in the left thyroid lobe, 12 mm, no calcification."]


def paper_model(**overrides) -> MedMoE:
    """The paper preset, built offline with the MiniLM tokenizer's vocabulary."""
    from transformers import AutoTokenizer

    tokenizer = resolve_text_source("minilm")
    vocab = len(AutoTokenizer.from_pretrained(tokenizer))
    torch.manual_seed(0)
    return MedMoE(load_config("paper", text={"vocab_size": vocab}, text_pretrained=False, **overrides), tokenizer)


def interleaved(steps: dict, repeats: int) -> dict:
    """Median seconds of each step, timed in turn so that a slow phase of the machine hits all alike."""
    for step in steps.values():
        step()  # warm-up
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def gmacs(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2e9


def image_part(model, args) -> dict:
    from transformers import SwinConfig, SwinModel

    swin = SwinModel(SwinConfig(image_size=224, **model.config.swin), add_pooling_layer=True).eval()
    model.eval()
    images = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    one = images[:1]
    with torch.inference_mode():
        macs = {"medmoe": gmacs(lambda: model.encode_image(one)), "swin": gmacs(lambda: swin(one))}
        seconds = interleaved({"medmoe": lambda: model.encode_image(images), "swin": lambda: swin(images)},
                              args.repeats)
    time_ratio, mac_ratio = seconds["medmoe"] / seconds["swin"], macs["medmoe"] / macs["swin"]
    return {"part": "image", "batch": args.batch, "medmoe_s": round(seconds["medmoe"], 3),
            "swin_s": round(seconds["swin"], 3), "medmoe_gmacs_per_image": round(macs["medmoe"], 3),
            "swin_gmacs_per_image": round(macs["swin"], 3), "time_ratio": round(time_ratio, 3),
            "mac_ratio": round(mac_ratio, 3), "time_over_mac_ratio": round(time_ratio / mac_ratio, 3)}


def train_batch(model, batch_size: int) -> dict:
    reports = [REPORTS[i % len(REPORTS)] for i in range(batch_size)]
    return {"images": torch.randn(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(1)),
            "reports": reports, "modality": torch.arange(batch_size) % 4, "tokens": model.text.tokenize(reports)}


def train_part(model, args) -> dict:
    model.train()
    batch = train_batch(model, args.train_batch)
    criterion = MedMoELoss.from_config(model.config)
    pooled_proj = torch.nn.Linear(model.image.backbone.channels[-1], model.config.embed_dim)

    def medmoe_step():
        model.zero_grad(set_to_none=True)
        forward_backward(model, criterion, [batch], torch.device("cpu"), contextlib.nullcontext, seed=0)

    def global_only_step():  # Swin-T pooled F4 -> projection, report -> t_g, the global loss only
        model.zero_grad(set_to_none=True)
        _, pooled = model.image.features(batch["images"])
        text = model.text(batch["tokens"])[0]
        sum(global_contrastive_loss(pooled_proj(pooled), text, model.config.temp3)).backward()

    macs = {"medmoe": gmacs(medmoe_step), "global_only": gmacs(global_only_step)}  # forward + backward
    seconds = interleaved({"medmoe": medmoe_step, "global_only": global_only_step}, args.repeats)
    return {"part": "train", "batch": args.train_batch, "medmoe_s": round(seconds["medmoe"], 3),
            "global_only_s": round(seconds["global_only"], 3),
            "medmoe_speed_vs_global_only": round(seconds["global_only"] / seconds["medmoe"], 3),
            "medmoe_gmacs": round(macs["medmoe"], 1), "global_only_gmacs": round(macs["global_only"], 1),
            "mac_ratio_global_only_over_medmoe": round(macs["global_only"] / macs["medmoe"], 3)}


def bf16_part(model, args) -> dict:
    """One training step in float32 and under bf16 autocast on CPU (``--precision bf16``), for MedMoE and for the
    Swin-T + BERT global-only model on the same batch: the time ratio, each loss's relative error and the
    gradient's (relative L2 over all parameters, and the cosine)."""
    from medmoe.train.loop import autocast_for

    model.train()
    batch = train_batch(model, args.train_batch)
    criterion = MedMoELoss.from_config(model.config)
    torch.manual_seed(1)
    pooled_proj = torch.nn.Linear(model.image.backbone.channels[-1], model.config.embed_dim)
    results = {}

    def gradient(parameters) -> torch.Tensor:
        return torch.cat([p.grad.flatten().double() for p in parameters if p.grad is not None])

    def medmoe_step(precision: str):
        model.zero_grad(set_to_none=True)
        losses, _ = forward_backward(model, criterion, [batch], torch.device("cpu"),
                                     autocast_for(torch.device("cpu"), precision), seed=0)
        results["medmoe", precision] = ({k: float(v) for k, v in losses.items()}, gradient(model.parameters()))

    def global_only_step(precision: str):  # the backbone, the text encoder and a projection: the global loss only
        model.zero_grad(set_to_none=True)
        pooled_proj.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout in both precisions, as forward_backward's seed does for MedMoE
        with autocast_for(torch.device("cpu"), precision)():
            _, pooled = model.image.features(batch["images"])
            text = model.text(batch["tokens"])[0]
            loss = sum(global_contrastive_loss(pooled_proj(pooled), text, model.config.temp3))
        loss.backward()
        parts = [*model.image.backbone.parameters(), *model.text.parameters(), *pooled_proj.parameters()]
        results["global_only", precision] = ({"global": float(loss)}, gradient(parts))

    seconds = interleaved({"fp32": lambda: medmoe_step("fp32"), "bf16": lambda: medmoe_step("bf16")}, args.repeats)
    global_only_step("fp32")
    global_only_step("bf16")
    out = {"part": "bf16", "batch": args.train_batch, "fp32_s": round(seconds["fp32"], 3),
           "bf16_s": round(seconds["bf16"], 3), "bf16_speedup": round(seconds["fp32"] / seconds["bf16"], 3)}
    for name in ("medmoe", "global_only"):
        (exact, g32), (low, g16) = results[name, "fp32"], results[name, "bf16"]
        out |= {f"{name}_{k}_loss_rel_error": round(abs(low[k] - v) / max(abs(v), 1e-12), 5) for k, v in exact.items()}
        out |= {f"{name}_grad_rel_l2_error": round(float((g16 - g32).norm() / g32.norm()), 5),
                f"{name}_grad_cosine": round(float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)), 5)}
    return out


def zeroshot_part(model, args) -> dict:
    from medmoe.eval.zeroshot import class_scores, embed_prompts, load_prompts
    from importlib import resources

    model.eval()
    prompts = load_prompts(resources.files("medmoe") / "data" / "prompts" / "rsna-pneumonia.json")
    images = torch.randn(args.zeroshot_batch, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        bank = embed_prompts(model, prompts["classes"], prompts.get("templates"))
        encoded = model.encode_image(images)
        words = torch.cat([w[:n] for w, n in zip(bank.words, bank.lengths.tolist())])  # [M, D] every real word
        regions = encoded.local_map.flatten(2)  # [B, D, S]
        steps = {"encode": lambda: model.encode_image(images), "score": lambda: class_scores(model, encoded, bank),
                 "logits": lambda: torch.matmul(words, regions)}
        macs = {name: gmacs(step) for name, step in steps.items()}
        seconds = interleaved(steps, args.repeats)
    return {"part": "zeroshot", "images": args.zeroshot_batch, "prompts": len(bank.prompt_class),
            "words": len(words), "encode_s": round(seconds["encode"], 3), "score_s": round(seconds["score"], 3),
            "score_over_encode": round(seconds["score"] / seconds["encode"], 3),
            "score_mac_ratio": round(macs["score"] / macs["encode"], 3),
            "logits_over_encode": round(seconds["logits"] / seconds["encode"], 3),
            "logits_mac_ratio": round(macs["logits"] / macs["encode"], 3)}


def compile_part(model, args) -> dict:
    import copy

    from medmoe.model.compile import compile_model

    model.eval()
    fast = compile_model(copy.deepcopy(model))
    images = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        start = time.perf_counter()
        fast.encode_image(images)  # the compilation itself
        compile_s = time.perf_counter() - start
        seconds = interleaved({"eager": lambda: model.encode_image(images), "compiled": lambda: fast.encode_image(images)},
                              args.repeats)
        diff = (fast.encode_image(images).local_map - model.encode_image(images).local_map).abs().max().item()
    return {"part": "compile", "batch": args.batch, "first_call_s": round(compile_s, 1),
            "eager_s": round(seconds["eager"], 3), "compiled_s": round(seconds["compiled"], 3),
            "speedup": round(seconds["eager"] / seconds["compiled"], 3), "max_abs_diff": diff}


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM: unlike ``ru_maxrss``, not carried over from the
    process that started it, whose peak Linux keeps across ``exec``)."""
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return kb / 2**20


def memory_step(batch_size: int) -> None:
    """One training step at ``batch_size`` in this process; prints its peak resident memory."""
    model = paper_model().train()
    before = peak_rss_gb()
    forward_backward(model, MedMoELoss.from_config(model.config), [train_batch(model, batch_size)],
                     torch.device("cpu"), contextlib.nullcontext, seed=0)
    peak = peak_rss_gb()
    print(json.dumps({"part": "memory", "batch": batch_size, "peak_rss_gb": round(peak, 2),
                      "model_built_rss_gb": round(before, 2)}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["image", "train", "zeroshot"],
                        choices=["image", "train", "zeroshot", "bf16"])
    parser.add_argument("--batch", type=int, default=8, help="images per encode_image call")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--zeroshot-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time the compiled encode_image")
    parser.add_argument("--memory", action="store_true", help="also the peak memory of a batch-32 training step")
    parser.add_argument("--memory-step", type=int, help=argparse.SUPPRESS)  # the subprocess of --memory
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="configuration overrides of the paper preset (e.g. attention=gloria temp1=4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_step:
        return memory_step(args.memory_step)
    overrides = parse_overrides(args.set)
    model = paper_model(**overrides)
    print(json.dumps({"torch": torch.__version__, "threads": args.threads, "device": "cpu", "set": overrides}),
          flush=True)
    for part in args.parts:
        parts = {"image": image_part, "train": train_part, "zeroshot": zeroshot_part, "bf16": bf16_part}
        print(json.dumps(parts[part](model, args)), flush=True)
    if args.compile:
        print(json.dumps(compile_part(model, args)), flush=True)
    if args.memory:
        subprocess.run([sys.executable, __file__, "--memory-step", "32", "--threads", str(args.threads)], check=True)


if __name__ == "__main__":
    main()
