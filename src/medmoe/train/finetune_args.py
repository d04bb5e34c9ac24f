"""``medmoe finetune``'s settings, each declared once (the options are built from these fields); light to
import, so that the command line can be built without torch (``train/finetune.py`` does the work)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import HEAD_FEATURES
from ..errors import ConfigError
from ..options import check_choices, option

MODES = ("linear", "full", "lora")
# per mode: learning rate, most epochs, epochs without a better val score before stopping, weight decay (linear:
# the L2 penalty of the full-batch L-BFGS fit, whose step needs no learning rate; full, lora: AdamW's)
MODE_DEFAULTS = {"linear": {"lr": None, "epochs": 50, "patience": 10, "weight_decay": 1e-4},
                 "full": {"lr": 1e-4, "epochs": 10, "patience": 3, "weight_decay": 0.01},
                 "lora": {"lr": 1e-3, "epochs": 10, "patience": 3, "weight_decay": 0.01}}
# what the head reads, chosen by measurement on MedSynth (benchmarks/RESULTS.md, "Fine-tuning vs the linear probe"):
# the routed expert's pooled map beat v_g by 7 points of test accuracy with a linear head
DEFAULT_FEATURES = "local"


@dataclass
class FinetuneArgs:
    data: str = option(help="JSONL or CSV manifest with a split column (train, val, test) and the label column(s)",
                       metavar="MANIFEST")
    out: str | None = option(None, "output model folder (config.json, model.safetensors, tokenizer/, finetune.json)",
                             metavar="DIR")
    labels: list[str] = field(default_factory=lambda: ["labels"])  # the label column(s); on the CLI: --labels
    mode: str = option("linear", "linear: frozen encoder + linear head; full: every image-side weight; lora: "
                       "low-rank adapters on the Swin attention and MLP layers", choices=MODES)
    features: str = option(DEFAULT_FEATURES, "what the head reads: global (v_g) or local (the routed expert's "
                           "pooled map)", choices=HEAD_FEATURES)
    multi_label: bool = option(False, "one sigmoid per class even if every row has one label (automatic when a "
                               "row lists several labels or several columns are given)")
    epochs: int | None = option(None, "most epochs (default: linear 50 rounds of 10 L-BFGS iterations, full and "
                                "lora 10)")
    lr: float | None = option(None, "full and lora: AdamW learning rate (default: full 1e-4, lora 1e-3; linear mode "
                              "is fitted by L-BFGS, which needs none)")
    patience: int | None = option(None, "stop after this many epochs without a better val score (default: linear "
                                  "10, full and lora 3)")
    batch_size: int = option(32, "images per step")
    weight_decay: float | None = option(None, "linear: L2 penalty of the head's weights (default 1e-4); full and "
                                        "lora: AdamW weight decay of weight matrices (default 0.01)")
    class_weights: bool = option(True, "no class weights (default: weighted by inverse class frequency)")
    head_init: str = option("probe", "full and lora: start from the linear head fitted on frozen features (probe) or "
                            "from zeros", choices=("probe", "zero"))
    augment: bool = option(False, "full and lora: train on random crops with intensity jitter (the pretraining's "
                           "augmentation; off by default: on MedSynth it cost the linear head 27 points of training "
                           "accuracy, 0.75 -> 0.47, so fine-tuning spent its epochs on views the test never shows)")
    rank: int = option(8, "lora: adapter rank")
    alpha: float = option(16.0, "lora: adapter scale numerator (scale = alpha / rank)")
    uncertain: str = option("zero", "several label columns: a -1 cell counts as negative (zero) or positive (one)",
                            choices=("zero", "one"))
    seed: int = option(0, "random seed (head, adapters, data order, augmentation)")
    device: str = option("auto", "auto: cuda when available", choices=("auto", "cpu", "cuda"))
    workers: int = option(0, "data-loading processes")
    progress: bool = option(True, "no progress bar", flag="--quiet")
    log_to: str | None = option(None, "also log each epoch's losses and scores to tensorboard, wandb or both "
                                "(comma-separated), in OUT/tensorboard and OUT/wandb (needs --out)", metavar="TRACKERS")

    def __post_init__(self):
        check_choices(self)
        if isinstance(self.labels, str):
            self.labels = [self.labels]
        if not self.labels:
            raise ConfigError("finetune needs at least one label column (--labels)")
        if self.batch_size < 1 or (self.epochs is not None and self.epochs < 1) or self.rank < 1:
            raise ConfigError("--batch-size, --epochs and --rank must be at least 1")

    def setting(self, name: str):
        """``lr``, ``epochs``, ``patience`` or ``weight_decay``: as given, else the mode's default."""
        value = getattr(self, name)
        return MODE_DEFAULTS[self.mode][name] if value is None else value
