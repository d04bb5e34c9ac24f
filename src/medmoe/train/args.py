"""The training settings, each declared once: ``medmoe train``'s options are built from these
fields (``medmoe/options.py``), with the help, type and default written here."""
from __future__ import annotations

import os
from dataclasses import dataclass

from .. import registry
from ..options import check_choices, option


@dataclass
class TrainArgs:
    data: str = option(help="JSONL or CSV manifest, or shards: 'OUT/{000000..000099}.tar'", metavar="DATA")
    out: str = option(help="run folder (checkpoints, metrics.jsonl)", metavar="RUN")
    steps: int = option(1000, "total optimisation steps")
    batch_size: int = option(32, "images per process and micro-batch")
    seed: int = option(0, "random seed")
    lr: float = option(3e-4, "peak learning rate")
    weight_decay: float = option(0.05, "weight decay of weight matrices (not of biases and norms)")
    warmup: int = option(50, "warm-up steps (at most a fifth of the run)")
    clip_grad: float = option(1.0, "largest gradient norm (clipped above)")
    checkpoint_every: int = option(200, "steps between checkpoints")
    eval_every: int = option(100, "steps between held-out scorings")
    log_every: int = option(10, "steps between lines of metrics.jsonl")
    workers: int = option(max(1, min(4, (os.cpu_count() or 2) - 1)), "data-loading processes (CPUs - 1, at most 4)")
    time_limit: float | None = option(None, "stop (with a checkpoint) after MIN minutes", metavar="MIN")
    stop_at: int | None = option(None, "stop (with a checkpoint) after step N, as if interrupted: --resume continues "
                                 "the same schedule (a long run in several jobs; learning curves)", metavar="N")
    resume: str | None = option(None, "continue RUN from its latest checkpoint (with RUN's own model configuration)",
                                metavar="RUN")
    progress: bool = option(True, "no progress bar", flag="--quiet")
    accum_steps: int = option(1, "micro-batches of --batch-size per process and step; the loss sees all A x batch "
                              "samples as negatives (feature caching)", metavar="A")
    epochs: float | None = option(None, "train this many epochs (overrides --steps)")
    val: str | None = option(None, "held-out manifest scored during training (default: the val split of --data; "
                             "needed to score a run on shards)", metavar="MANIFEST")
    gather_local: bool = option(False, "under torchrun, score the local loss against every process's samples "
                                "(default: per process)")
    sync_bn: bool = option(True, "under torchrun, normalise the experts per process instead of over the global batch")
    device: str = option("auto", "auto: cuda when available", choices=("auto", "cpu", "cuda"))
    precision: str = option("auto", "auto: bf16 autocast on GPU (TF32 on), fp32 on CPU",
                            choices=("auto", "bf16", "fp32"))
    optimizer: str = option("adamw", "adamw, or adam (the paper's and GLoRIA's)", choices=("adamw", "adam"))
    schedule: str = option("cosine", "cosine: linear warm-up then cosine decay; plateau: halve the learning rate "
                           "when the validation loss has not improved for --plateau-patience evaluations (GLoRIA); "
                           "constant", choices=("cosine", "plateau", "constant"))
    plateau_patience: int = option(5, "evaluations without improvement before the plateau schedule halves the lr")
    router_lr_mult: float = option(1.0, "learning-rate multiplier of both routers")
    balance: str = option("modality", "modality: every modality sampled equally often, so a rare one is routed "
                          "right (manifests and shards; measured: benchmarks/RESULTS.md); none: each row once per "
                          "epoch", choices=("none", "modality"))
    aux_class_weight: bool = option(False, "weight the auxiliary loss by the inverse modality frequency of the "
                                    "training data")
    compile: bool = option(False, "torch.compile the backbone and the text encoder (faster after a slow first "
                           "step; eager with a warning where it cannot run)")
    log_to: str | None = option(None, "also log to tensorboard, wandb or both (comma-separated): the scalars of "
                                "metrics.jsonl and, at evaluation steps, attention and routing figures; in RUN/tensorboard "
                                "and RUN/wandb (offline unless WANDB_MODE=online)", metavar="TRACKERS")
    recipe: str = "default"  # the recipe these settings came from (medmoe/recipes/NAME.json)

    def __post_init__(self):
        check_choices(self)

    @classmethod
    def from_recipe(cls, **given) -> "TrainArgs":
        """The settings of recipe ``given["recipe"]`` (default: default; ``medmoe/recipes/NAME.json``),
        then ``given``."""
        return cls(**{**registry.get("recipes", given.get("recipe", "default")).get("train", {}), **given})
