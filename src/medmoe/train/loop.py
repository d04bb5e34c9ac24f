"""The training loop: AdamW, warm-up + cosine schedule, clipping, periodic held-out scoring,
checkpoints every N steps, exact resume; data-parallel under torchrun.

    medmoe train --preset small --data manifest.jsonl --out runs/a --steps 300
    torchrun --nproc_per_node 2 -m medmoe train --preset small --data manifest.jsonl --out runs/a

Writes ``RUN/metrics.jsonl`` (one JSON object per logged step and per evaluation),
``RUN/skipped.jsonl`` (rows that could not be used, with reasons), ``RUN/train_args.json``,
``RUN/data.json`` (the training data and its modalities) and ``RUN/checkpoints/`` (see ``runs.py`` and
``checkpoint.py``); under DDP only rank 0 writes.

A step consumes one global batch of ``batch_size x accum_steps x world`` samples: each rank
takes its slice and embeds it in ``accum_steps`` micro-batches of ``batch_size`` (``step.py``).
The data order is a pure function of (seed, step), and so are the random numbers of each
step's forwards, so a resumed run replays exactly what an uninterrupted one sees.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from .. import distributed
from ..config import MedMoEConfig, modality_index
from ..data.dataset import ImageReportDataset, ResumableBatches, make_loader
from ..data.transforms import ImageTransform
from ..data.manifest import read_manifest
from ..errors import ConfigError, ManifestError, TrainingError
from ..files import atomic_write_text
from ..losses import MedMoELoss
from ..model.text import ReportTokenizer
from ..runs import MODEL_CONFIG_FILE, latest_checkpoint, write_training_data
from ..seeding import derive_seed
from .args import TrainArgs
from .checkpoint import load_checkpoint, save_checkpoint
from .optim import build_optimizer, build_scheduler, upcycle
from .step import embed, forward_backward, split_batch
from .trackers import Trackers, evaluation_figures, parse_log_to

MAX_NONFINITE = 10  # consecutive non-finite steps before the run stops


class _Log:
    """metrics.jsonl and skipped.jsonl: started afresh by a new run, continued by a resumed one; every
    metrics record also goes to the ``--log-to`` trackers. Only the main process writes."""

    def __init__(self, run: Path, resumed: bool, main: bool, trackers: Trackers):
        self.main, self.trackers = main, trackers
        if main:
            mode = "a" if resumed else "w"
            self.metrics = open(run / "metrics.jsonl", mode, encoding="utf-8")
            self.skipped = open(run / "skipped.jsonl", mode, encoding="utf-8")

    def write(self, record: dict) -> None:
        if self.main:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
            self.trackers.log(record)

    def skip(self, rows: list[dict]) -> None:
        if self.main:
            for r in rows:
                self.skipped.write(json.dumps(r) + "\n")
            self.skipped.flush()


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on GPU by default (TF32 for what stays in float32), float32 on CPU."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if precision == "fp32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def _is_shards(data: str) -> bool:
    return ".tar" in data or Path(data).is_dir()


def _absolute(path: str) -> str:
    """``path`` made absolute (a shard pattern keeps its braces)."""
    return str(Path(path).absolute())


def _training_data(args: TrainArgs, config: MedMoEConfig, tokenize: ReportTokenizer, proc, start: int,
                   per_rank: int):
    """(batches of this rank from step ``start``, their reports tokenised by ``tokenize``, training
    samples, steps per epoch, val rows, unusable manifest rows, training samples per modality)."""
    try:
        return _open_data(args, config, tokenize, proc, start, per_rank)
    except ValueError as exc:  # e.g. fewer shards than readers, or a batch larger than the data
        raise ManifestError(f"{args.data}: {exc}") from None


def _open_data(args: TrainArgs, config: MedMoEConfig, tokenize: ReportTokenizer, proc, start: int, per_rank: int):
    if _is_shards(args.data):
        from ..data.shards import shard_batches

        stream = shard_batches(args.data, ImageTransform.of(config), config.modalities, per_rank, args.seed, start,
                               proc.rank, proc.world, args.workers, balance=args.balance == "modality",
                               tokenize=tokenize)
        val = read_manifest(args.val).split("val") if args.val else []
        return iter(stream), stream.samples, stream.steps_per_epoch, val, [], stream.modality_counts
    manifest = read_manifest(args.data)
    rows = manifest.split("train")
    if not rows:
        raise ManifestError(f"{args.data}: no usable training row ({len(manifest.unusable)} unusable of "
                            f"{manifest.total}; see `medmoe data check {args.data}`)")
    val = read_manifest(args.val).split("val") if args.val else manifest.split("val")
    groups = [modality_index(config.modalities, r.modality) for r in rows] if args.balance == "modality" else None
    sampler = ResumableBatches(len(rows), per_rank, args.seed, start, proc.rank, proc.world, groups)
    loader = make_loader(ImageReportDataset(rows, ImageTransform.of(config), config.modalities, tokenize), sampler,
                         args.workers, args.seed)
    counts = Counter(r.modality or "unknown" for r in rows)
    return iter(loader), len(rows), sampler.steps_per_epoch, val, manifest.unusable, counts


def aux_class_weights(model, modality_counts: dict[str, int]) -> torch.Tensor:
    """[K] weights of the auxiliary loss's classes (the experts the modalities are assigned to):
    inverse frequency in the training data, n / (classes present x n_k), 0 for an absent class."""
    counts = torch.zeros(model.config.num_experts, dtype=torch.float64)
    for name, n in modality_counts.items():
        target = int(model.gate.expert_of(model.gate.modality_index([name]))[0])
        if target >= 0:
            counts[target] += n
    present = counts > 0
    return torch.where(present, counts.sum() / (present.sum() * counts).clamp(min=1), 0.0).float()


def average_route_stats(stats: list[dict]) -> dict:
    """``Route.stats()`` of several steps averaged, each key prefixed ``route_`` (for metrics.jsonl)."""
    out = {}
    for key in dict.fromkeys(k for s in stats for k in s):
        values = torch.tensor([s[key] for s in stats if key in s], dtype=torch.float64)
        mean = values.mean(0)
        out[f"route_{key}"] = [round(v, 4) for v in mean.tolist()] if mean.ndim else round(float(mean), 4)
    return out


@torch.no_grad()
def validation_loss(model, criterion, rows, batch_size: int, device, autocast) -> float:
    """The training loss (eval mode, text routing as in training) averaged over the rows."""
    loader = make_loader(ImageReportDataset(rows, ImageTransform.of(model.config), model.config.modalities,
                                            model.text.tokenize), batch_size=batch_size)
    model.eval()
    total, n = 0.0, 0
    for batch in loader:
        if len(batch["reports"]) >= 2:  # a contrastive loss needs negatives
            with autocast():
                total += criterion(**embed(model, batch, device))["total"].item() * len(batch["reports"])
            n += len(batch["reports"])
    return total / max(n, 1)


def train(config: MedMoEConfig, args: TrainArgs) -> dict:
    """Train and return the last held-out scores. Raises ManifestError if no row is usable and
    TrainingError after MAX_NONFINITE non-finite steps in a row. Under torchrun, every process
    calls this; it joins the process group itself."""
    kinds = parse_log_to(args.log_to)  # a bad --log-to fails before anything starts
    proc = distributed.setup(args.device)
    ok = False
    trackers = None
    try:
        trackers = Trackers(kinds if proc.main else (), args.out, Path(args.out).name,
                            {"model": config.to_dict(), "train": dataclasses.asdict(args)})
        result = _train(config, args, proc, trackers)
        ok = True
        return result
    finally:
        if trackers is not None:
            trackers.close()
        distributed.teardown(ok)


def _train(config: MedMoEConfig, args: TrainArgs, proc: distributed.Process, trackers: Trackers) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    from ..eval.scores import held_out_scores
    from ..model.medmoe import MedMoE

    if args.accum_steps < 1 or args.batch_size < 1:
        raise ConfigError("--batch-size and --accum-steps must be at least 1")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0 (got {args.seed})")
    run = Path(args.out)
    resume_from = latest_checkpoint(args.resume) if args.resume else None
    if args.resume and resume_from is None:
        raise ManifestError(f"--resume {args.resume}: no checkpoint found in that run folder")
    resumed_model = MedMoE.from_pretrained(resume_from / "model") if resume_from else None
    if resumed_model is not None:  # a resumed run continues with its own configuration and weights
        config = resumed_model.config
    resumed = json.loads((resume_from / "trainer.json").read_text()) if resume_from else {}
    start = resumed.get("step", 0)
    if _is_shards(args.data) and "workers" in resumed:  # the shard order depends on the number of readers
        args = dataclasses.replace(args, workers=resumed["workers"])
    per_rank = args.batch_size * args.accum_steps
    tokenize = resumed_model.text.tokenize if resumed_model is not None else ReportTokenizer.of(config)
    batches, samples, steps_per_epoch, val_rows, unusable, modality_counts = _training_data(
        args, config, tokenize, proc, start, per_rank)
    steps = math.ceil(args.epochs * steps_per_epoch) if args.epochs is not None else args.steps

    if proc.main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run / "train_args.json", json.dumps(dataclasses.asdict(args) | {"world": proc.world}, indent=2))
        write_training_data(run, {"data": _absolute(args.data), "val": args.val and _absolute(args.val),
                                  "shards": _is_shards(args.data), "per_modality": dict(sorted(modality_counts.items()))})
        if resume_from is None:
            atomic_write_text(run / MODEL_CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
    log = _Log(run, resumed=resume_from is not None, main=proc.main, trackers=trackers)
    log.skip([{**u, "stage": "manifest"} for u in unusable])

    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = (resumed_model or MedMoE(config)).to(proc.device).train()
    if args.compile:
        from ..model.compile import compile_model

        compile_model(model)
    # tower by tower: the order of the gradient norm's float sum (a seed gives the same run as it always has)
    params = [p for tower in model.towers() for part in tower for p in part.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args, steps)
    plateau = args.schedule == "plateau"
    if plateau and not val_rows:
        raise ConfigError("the plateau schedule follows the validation loss: the data needs a val split (or --val)")
    if resume_from:
        load_checkpoint(resume_from, optimizer, scheduler)
    aux_weight = aux_class_weights(model, modality_counts).to(proc.device) if args.aux_class_weight else None
    criterion = MedMoELoss.from_config(config, aux_class_weight=aux_weight, gather_local=args.gather_local)
    # rank 0 alone scores the val split: no collective
    val_criterion = MedMoELoss.from_config(config, aux_class_weight=aux_weight, gather=False)
    if proc.world > 1:
        if args.sync_bn:
            model.sync_batchnorm()
        model = DistributedDataParallel(model, device_ids=[proc.local_rank] if proc.device.type == "cuda" else None,
                                        find_unused_parameters=True)  # routing leaves experts idle
    raw = distributed.unwrap(model)  # what is saved, evaluated and upcycled
    autocast = autocast_for(proc.device, args.precision)

    def checkpoint(step):
        if proc.main:
            save_checkpoint(run, step, raw, optimizer, scheduler, {"seed": args.seed, "data_position": step,
                                                                    "world": proc.world, "workers": args.workers})

    def evaluate(step):
        scores = {}
        if val_rows and proc.main:
            scores = held_out_scores(raw, val_rows, keep_routing=trackers.active)
            log.skip([{**s, "stage": "val"} for s in scores.pop("skipped")])
            routing = scores.pop("routing", None)
            if plateau:
                scores["loss"] = validation_loss(raw, val_criterion, val_rows, args.batch_size, proc.device,
                                                 autocast)
            log.write({"step": step, "split": "val", **scores})
            if trackers.active:
                with tempfile.TemporaryDirectory() as tmp:
                    trackers.figures(step, evaluation_figures(raw, val_rows, routing, Path(tmp)))
            raw.train()
        if plateau:  # every rank's learning rate follows rank 0's validation loss
            scheduler.step(distributed.broadcast_object(scores.get("loss")))
        return scores

    def barrier():  # the others wait while rank 0 evaluates or writes
        if distributed.is_distributed():
            torch.distributed.barrier()

    from tqdm.auto import tqdm

    if proc.main and args.progress:
        print(f"{samples} training samples; global batch {per_rank * proc.world} "
              f"({proc.world} x {args.accum_steps} x {args.batch_size}); {steps_per_epoch} steps per epoch; "
              f"{steps} steps on {proc.device}")
    bar = tqdm(total=steps, initial=start, disable=not (args.progress and proc.main), unit="step",
               dynamic_ncols=True)
    began, last = time.perf_counter(), {}
    wait = compute = 0.0  # seconds waiting for batches / computing steps
    nonfinite = 0  # consecutive non-finite steps

    def data_wait() -> float:
        return round(wait / max(wait + compute, 1e-9), 4)

    step, pending, routes = start, [], []  # since the last log line: this rank's skipped rows, its route stats
    while step < steps:
        if raw.gate is not None and step >= config.upcycle_step and not raw.gate.upcycled:
            upcycle(raw, optimizer)
            bar.write(f"step {step}: expert 0 copied into all {config.num_experts} experts (upcycling)")
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        pending += [{**s, "stage": "train", "step": step} for s in batch["skipped"]]
        optimizer.zero_grad(set_to_none=True)
        record = None
        # every rank must run as many micro-batches; a contrastive batch needs negatives: a step where
        # some rank has fewer than 2 samples (all unreadable) is skipped, keeping the data order
        smallest = distributed.all_min(len(batch["reports"]), proc.device)
        if smallest >= 2:
            micro = split_batch(batch, min(args.accum_steps, smallest))
            losses, route = forward_backward(model, criterion, micro, proc.device, autocast,
                                             seed=derive_seed(args.seed, "forward", step, proc.rank))
            routes += [route.stats()] if route is not None else []
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
            finite = distributed.all_true(bool(torch.isfinite(losses["total"]) and torch.isfinite(grad_norm)),
                                          proc.device)
            if finite:
                optimizer.step()
            nonfinite = 0 if finite else nonfinite + 1
            rate = len(batch["reports"]) * proc.world / (time.perf_counter() - t0)
            record = {"step": step + 1, "split": "train", **{k: round(v.item(), 5) for k, v in losses.items()},
                      "lr": optimizer.param_groups[0]["lr"], "grad_norm": round(float(grad_norm), 4),
                      "images_per_s": round(rate, 2), "epoch": round((step + 1) / steps_per_epoch, 4),
                      "time_s": round(time.perf_counter() - began, 3)}
        if not plateau:
            scheduler.step()
        step += 1
        bar.update(1)
        wait, compute = wait + (t1 - t0), compute + (time.perf_counter() - t1)
        if record is not None and nonfinite:  # no checkpoint until the loss is finite again: the last good stays
            log.write(record | {"nonfinite": True})
            bar.write(f"step {step}: non-finite loss or gradient, update skipped ({nonfinite} in a row)")
            if nonfinite >= MAX_NONFINITE:
                bar.close()
                raise TrainingError(f"{nonfinite} non-finite steps in a row at step {step}: stopping; last good "
                                    f"checkpoint: {latest_checkpoint(run) or 'none written yet'}")
            continue
        if record is not None:
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()} | {"img/s": f"{rate:.1f}"})
        if step % args.log_every == 0 or step == steps:
            log.skip(distributed.gather_lists(pending))
            pending = []
            if record is not None:
                log.write(record | {"data_wait": data_wait()} | average_route_stats(routes))
            routes = []
        out_of_time = args.time_limit is not None and not distributed.all_true(  # every rank stops together
            time.perf_counter() - began <= 60 * args.time_limit, proc.device)
        stop = out_of_time or step == args.stop_at
        if step % args.eval_every == 0 and step < steps and not stop:
            last = evaluate(step)
            barrier()
        if step % args.checkpoint_every == 0 or step == steps or stop:
            checkpoint(step)
            barrier()
        if stop:
            bar.write(f"time limit of {args.time_limit} min reached at step {step}" if out_of_time else
                      f"stopped at step {step} of {steps} (--stop-at); --resume {run} continues")
            break
    bar.close()
    log.skip(distributed.gather_lists(pending))
    last = evaluate(step) or last
    barrier()
    return {"step": step, "run": str(run), "world": proc.world, "data_wait": data_wait(), **last}
