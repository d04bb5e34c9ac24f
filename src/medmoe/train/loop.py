"""The training loop: AdamW, warm-up + cosine schedule, clipping, periodic held-out scoring,
checkpoints every N steps, exact resume.

    medmoe train --preset small --data manifest.jsonl --out runs/a --steps 300

Writes ``RUN/metrics.jsonl`` (one JSON object per logged step and per evaluation),
``RUN/skipped.jsonl`` (rows that could not be used, with reasons), ``RUN/train_args.json`` and
``RUN/checkpoints/`` (see ``checkpoint.py``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import MedMoEConfig
from ..data.dataset import ImageReportDataset, ResumableBatches, make_loader
from ..data.manifest import ManifestError, read_manifest
from ..losses import MedMoELoss
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


@dataclass
class TrainArgs:
    data: str
    out: str
    steps: int = 1000
    batch_size: int = 32
    seed: int = 0
    lr: float = 3e-4
    weight_decay: float = 0.05
    warmup: int = 50
    clip_grad: float = 1.0
    checkpoint_every: int = 200
    eval_every: int = 100
    log_every: int = 10
    workers: int = max(1, min(4, (os.cpu_count() or 2) - 1))
    time_limit: float | None = None  # minutes; stops early (with a checkpoint) when reached
    resume: str | None = None
    progress: bool = True


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class _Log:
    """metrics.jsonl and skipped.jsonl: started afresh by a new run, continued by a resumed one."""

    def __init__(self, run: Path, resumed: bool):
        mode = "a" if resumed else "w"
        self.metrics = open(run / "metrics.jsonl", mode, encoding="utf-8")
        self.skipped = open(run / "skipped.jsonl", mode, encoding="utf-8")

    def write(self, record: dict) -> None:
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()

    def skip(self, rows: list[dict]) -> None:
        for r in rows:
            self.skipped.write(json.dumps(r) + "\n")
        self.skipped.flush()


def train(config: MedMoEConfig, args: TrainArgs) -> dict:
    """Train and return the last held-out scores. Raises ManifestError if no row is usable."""
    from ..eval.scores import held_out_scores
    from ..model.medmoe import MedMoE

    run = Path(args.out)
    manifest = read_manifest(args.data)
    train_rows, val_rows = manifest.split("train"), manifest.split("val")
    if not train_rows:
        raise ManifestError(f"{args.data}: no usable training row ({len(manifest.unusable)} unusable of "
                            f"{manifest.total}; see `medmoe data check {args.data}`)")
    resume_from = latest_checkpoint(args.resume) if args.resume else None
    if args.resume and resume_from is None:
        raise ManifestError(f"--resume {args.resume}: no checkpoint found in that run folder")
    run.mkdir(parents=True, exist_ok=True)
    log = _Log(run, resumed=resume_from is not None)
    log.skip([{**u, "stage": "manifest"} for u in manifest.unusable])
    (run / "train_args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))

    torch.manual_seed(args.seed)
    # a resumed run continues with its own configuration and weights
    model = MedMoE.from_pretrained(resume_from / "model").train() if resume_from else MedMoE(config)
    config = model.config
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    warmup = min(args.warmup, args.steps // 5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, args.steps))
    criterion = MedMoELoss(config.temp1, config.temp2, config.temp3, config.local_agg,
                           config.w_global, config.w_local, config.w_aux)

    start = load_checkpoint(resume_from, optimizer, scheduler)["step"] if resume_from else 0

    dataset = ImageReportDataset(train_rows, config.image_size, config.modalities)
    sampler = ResumableBatches(len(dataset), args.batch_size, args.seed, start)
    batches = iter(make_loader(dataset, sampler, args.workers, args.seed))

    def checkpoint(step):
        save_checkpoint(run, step, model, optimizer, scheduler, {"seed": args.seed, "data_position": step})

    def evaluate(step):
        if not val_rows:
            return {}
        scores = held_out_scores(model, val_rows)
        log.skip([{**s, "stage": "val"} for s in scores.pop("skipped")])
        log.write({"step": step, "split": "val", **scores})
        model.train()
        return scores

    from tqdm.auto import tqdm

    bar = tqdm(total=args.steps, initial=start, disable=not args.progress, unit="step", dynamic_ncols=True)
    began, last = time.perf_counter(), {}
    wait = compute = 0.0  # seconds waiting for batches / computing steps

    def data_wait() -> float:
        return round(wait / max(wait + compute, 1e-9), 4)

    step = start
    model.train()
    while step < args.steps:
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        log.skip([{**s, "stage": "train", "step": step} for s in batch["skipped"]])
        if len(batch["reports"]) < 2:  # a contrastive batch needs negatives; skip it but keep the order
            step += 1
            scheduler.step()
            bar.update(1)
            continue
        image, text = model(batch["images"], batch["reports"], batch["modality"])
        target = model.expert_targets(batch["modality"])
        routers = [r for r in (image.router_logits, text.router_logits) if r is not None]
        losses = criterion(image.global_emb, text.global_emb, image.local_map, text.words, text.lengths,
                           routers, target)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
        optimizer.step()
        scheduler.step()
        step += 1
        wait, compute = wait + (t1 - t0), compute + (time.perf_counter() - t1)
        rate = len(batch["reports"]) / (time.perf_counter() - t0)
        bar.update(1)
        bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()} | {"img/s": f"{rate:.1f}"})
        if step % args.log_every == 0 or step == args.steps:
            log.write({"step": step, "split": "train", **{k: round(v.item(), 5) for k, v in losses.items()},
                       "lr": scheduler.get_last_lr()[0], "grad_norm": round(float(grad_norm), 4),
                       "images_per_s": round(rate, 2), "data_wait": data_wait()})
        out_of_time = args.time_limit is not None and time.perf_counter() - began > 60 * args.time_limit
        if step % args.eval_every == 0 and step < args.steps and not out_of_time:
            last = evaluate(step)
        if step % args.checkpoint_every == 0 or step == args.steps or out_of_time:
            checkpoint(step)
        if out_of_time:
            bar.write(f"time limit of {args.time_limit} min reached at step {step}")
            break
    bar.close()
    last = evaluate(step) or last
    return {"step": step, "run": str(run), "data_wait": data_wait(), **last}
