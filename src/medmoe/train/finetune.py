"""Fine-tuning on a user's labels (``medmoe finetune``): a classification head, trained with the image side
frozen (``linear``), with every image-side weight (``full``) or with low-rank adapters (``lora``).

    model = medmoe.load("runs/demo/medmoe")
    result = finetune(model, FinetuneArgs(data="labels.jsonl", mode="linear", out="runs/finetuned"))
    result.model            # a copy of ``model`` with a head (the argument is left as it was)
    result.record["test"]   # accuracy, macro AUC, per-class AUC on the test split

The output folder is a model folder whose configuration names the head's classes (``head_classes``,
``head_multi_label``, ``head_features``): ``medmoe.load``, ``classify``, ``app`` and ``export`` read it as
any other model and then use the head. Beside it, ``finetune.json`` holds the arguments, classes, split
sizes, class weights, the per-epoch history, the best epoch and the validation and test metrics.

**Data.** The manifest's ``split`` column gives train (fitted), val (early stopping: the epoch with the
best val accuracy, or macro AUC for multi-label, ties to the lower val loss) and test (the metrics).
``labels`` names the label column: one class name per row (multi-class, softmax head), or a list of
names (``["a", "b"]`` in JSONL, ``a;b`` in CSV: multi-label, one sigmoid per class). Several columns
(CheXpert's observations) make one class each and a multi-label head: a cell 1 is positive, 0 or blank
negative, -1 (uncertain) as ``uncertain`` says. A row without a label is skipped and counted. Classes are
those of the train split; a val or test label that no training row has, no val split or a missing column
are one-line errors. Imbalanced labels are weighted (``class_weights``): the softmax's cross-entropy by
n / (C n_c), the sigmoid's positives by n_neg / n_pos.

**Modes.** ``linear``: the encoder frozen, each image embedded once (no augmentation), a linear head on
the standardised features fitted as ``eval.probe``'s logistic regression is (full batch, L-BFGS, a small L2
penalty; early stopping on val every 10 iterations), the standardisation folded into the head: the probe
made into a model (one head over every class, not one per modality). ``full``: first the same linear
head (``head_init="probe"``: linear probing then fine-tuning, Kumar et al. 2022, so the encoder's first
steps are not spent against a random head), then every image-side weight (backbone, experts, global
projection, image router, head) trained on the images as the test sees them (``augment=True`` adds the
pretraining's random crops and jitter); the text side is frozen (the head never sees it), and batch norm
keeps the base model's statistics (the experts see the batch in small per-expert groups; measured: with
batch statistics the first epoch undid the linear head, MedSynth test accuracy 0.668 after 3 epochs).
``lora``: the same, but only low-rank adapters on every Swin attention and MLP layer (``model.lora``) and
the head train; the adapters are merged into the weights before saving, so the folder is a plain model
folder.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import HEAD_FEATURES
from ..data.dataset import ImageReportDataset, ResumableBatches, make_loader
from ..data.manifest import Row, read_manifest
from ..data.tables import read_table
from ..data.transforms import ImageTransform
from ..errors import ConfigError, DataError
from ..model.medmoe import head_input, head_probabilities
from ..files import atomic_write_text
from ..seeding import derive_seed
from .finetune_args import MODE_DEFAULTS, FinetuneArgs
from .optim import lr_factor, param_groups
from .trackers import TrackedHistory, Trackers, parse_log_to

__all__ = ["FinetuneArgs", "finetune", "read_labelled", "classification_metrics", "attach_head", "format_metrics"]

SPLITS = ("train", "val", "test")
RECORD_FILE = "finetune.json"


# ------------------------------------------------------------------------------------------------ data
@dataclass
class Labelled:
    """A manifest's labelled rows per split, with their targets: class indices [n] (multi-class) or 0/1
    [n, C] (multi-label)."""
    classes: list[str]
    multi_label: bool
    rows: dict[str, list[Row]]
    targets: dict[str, torch.Tensor]
    unlabelled: dict[str, int]  # rows of each split without a label (skipped)
    unusable: int  # manifest rows that could not be read (missing image, empty report, ...)

    def sizes(self) -> dict[str, int]:
        return {s: len(self.rows[s]) for s in SPLITS}


def _names(value) -> list[str] | None:
    """The class names of a label cell: a list, a JSON list in text, ``a;b`` or one name; None when blank. An
    explicit empty list (``[]``) is [] (multi-label: no class present; multi-class: no label)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (list, tuple)):
        names = [str(v).strip() for v in value if str(v).strip()]
    else:
        text = str(value).strip()
        if text.startswith("["):
            try:
                names = [str(v).strip() for v in json.loads(text) if str(v).strip()]
            except (ValueError, TypeError):
                raise ValueError(f"label {text!r} is not a JSON list") from None
            return names
        else:
            names = [v.strip() for v in text.split(";") if v.strip()]
    return names if names or isinstance(value, (list, tuple)) else None


def _flag(value, uncertain: str) -> float | None:
    """A 0/1 label cell: 1 positive, 0 negative, -1 by ``uncertain``, blank None (ValueError otherwise)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not 1, 0, -1 or blank") from None
    if number == -1:
        return 1.0 if uncertain == "one" else 0.0
    if number not in (0, 1):
        raise ValueError(f"{value!r} is not 1, 0, -1 or blank")
    return number


def read_labelled(manifest: str | Path, columns: list[str], multi_label: bool = False,
                  uncertain: str = "zero") -> Labelled:
    """The labelled rows of ``manifest`` per split (see the module's docstring)."""
    data = read_manifest(manifest)
    header, records = read_table(Path(manifest))
    if missing := [c for c in columns if c not in header]:
        raise DataError(f"{manifest} has no label column {', '.join(map(repr, missing))} "
                        f"(columns: {', '.join(header)})")
    cells = {r.row: r.data for r in records if r.data is not None}
    wide = len(columns) > 1
    found: dict[str, list[tuple[Row, object]]] = {s: [] for s in SPLITS}
    unlabelled = dict.fromkeys(SPLITS, 0)
    unsplit = not any(r.split for r in data.rows)  # no split column: every row is train (and val is missing)
    for row in data.rows:
        split = row.split or ("train" if unsplit else None)
        if split not in found:
            continue
        record = cells[row.row]
        try:
            if wide:
                flags = [_flag(record.get(c), uncertain) for c in columns]
                label = None if all(f is None for f in flags) else [f or 0.0 for f in flags]
            else:
                label = _names(record.get(columns[0]))
        except ValueError as exc:
            raise DataError(f"{manifest} row {row.row}: {exc}") from None
        if label is None:
            unlabelled[split] += 1
        else:
            found[split].append((row, label))
    multi_label = wide or multi_label or any(len(label) > 1 for split in found.values() for _, label in split)
    if not multi_label:  # an empty list is no label for a multi-class head
        for split in SPLITS:
            unlabelled[split] += sum(not label for _, label in found[split])
            found[split] = [(row, label) for row, label in found[split] if label]
    if not found["train"]:
        raise DataError(f"{manifest}: no labelled row in the train split (column {', '.join(columns)})")
    if not found["val"]:
        raise DataError(f"{manifest}: no labelled row in the val split; fine-tuning stops early on it (give some rows "
                        "split=val)")
    if wide:
        classes = list(columns)
        positives = torch.tensor([label for _, label in found["train"]]).sum(0)
        if (empty := [c for c, n in zip(classes, positives.tolist()) if n == 0]):
            raise DataError(f"{manifest}: class {empty[0]!r} has no positive training row")
    else:
        classes = sorted({name for _, label in found["train"] for name in label})
        if not classes:
            raise DataError(f"{manifest}: no training row has a class in column {columns[0]!r}")
        for split in ("val", "test"):
            unseen = sorted({name for _, label in found[split] for name in label} - set(classes))
            if unseen:
                raise DataError(f"{manifest}: class {unseen[0]!r} has no training row (it is in the {split} split)")
        if len(classes) < 2 and not multi_label:
            raise DataError(f"{manifest}: the train split has one class ({classes[0]!r}); a classifier needs two")
    index = {c: i for i, c in enumerate(classes)}

    def target(label) -> torch.Tensor:
        if wide:
            return torch.tensor(label)
        if multi_label:
            t = torch.zeros(len(classes))
            t[[index[n] for n in label]] = 1.0
            return t
        return torch.tensor(index[label[0]])

    targets = {s: torch.stack([target(label) for _, label in found[s]]) if found[s] else
               torch.empty((0, len(classes)) if multi_label else (0,), dtype=torch.float if multi_label else torch.long)
               for s in SPLITS}
    return Labelled(classes, multi_label, {s: [r for r, _ in found[s]] for s in SPLITS}, targets, unlabelled,
                    len(data.unusable))


def class_weights(targets: torch.Tensor, num_classes: int, multi_label: bool) -> torch.Tensor:
    """Multi-class: n / (C n_c) per class (1 on average); multi-label: n_neg / n_pos per class (BCE's
    ``pos_weight``)."""
    if multi_label:
        pos = targets.sum(0)
        return (len(targets) - pos) / pos.clamp_min(1)
    counts = torch.bincount(targets, minlength=num_classes).float()
    return len(targets) / (num_classes * counts.clamp_min(1))


# ----------------------------------------------------------------------------------------------- metrics
def classification_metrics(probabilities: torch.Tensor, targets: torch.Tensor, classes: list[str],
                           multi_label: bool) -> dict:
    """Multi-class: accuracy, balanced accuracy, macro AUC (one-vs-rest) and per-class AUC; multi-label:
    accuracy (each label at 0.5), exact match, macro AUC and per-class AUC. A class whose test rows are all
    positive or all negative has no AUC (None) and is left out of the macro mean."""
    from sklearn.metrics import roc_auc_score

    p, t = probabilities.double().numpy(), targets.numpy()
    n = len(t)
    if n == 0:
        return {"n": 0}
    onehot = t if multi_label else np.eye(len(classes))[t]
    per_class = {}
    for c, name in enumerate(classes):
        column = onehot[:, c]
        per_class[name] = float(roc_auc_score(column, p[:, c])) if 0 < column.sum() < n else None
    defined = [v for v in per_class.values() if v is not None]
    out = {"n": int(n), "macro_auc": float(np.mean(defined)) if defined else None, "per_class_auc": per_class}
    if multi_label:
        predicted = p >= 0.5
        out["accuracy"] = float((predicted == (t > 0.5)).mean())
        out["exact_match"] = float((predicted == (t > 0.5)).all(1).mean())
    else:
        predicted = p.argmax(1)
        out["accuracy"] = float((predicted == t).mean())
        recalls = [float((predicted[t == c] == c).mean()) for c in range(len(classes)) if (t == c).any()]
        out["balanced_accuracy"] = float(np.mean(recalls))
    return out


def _score(metrics: dict, multi_label: bool) -> float:
    """The val score early stopping maximises: accuracy, or macro AUC for multi-label."""
    value = metrics.get("macro_auc" if multi_label else "accuracy")
    return -math.inf if value is None else value


# ------------------------------------------------------------------------------------------------ model
def attach_head(model, classes: list[str], multi_label: bool, features: str):
    """``model`` (changed in place and returned) with a new head over ``classes`` (zeros: the uniform
    classifier) and its configuration saying so, so that ``save_pretrained`` writes both."""
    if features not in HEAD_FEATURES:
        raise ConfigError(f"features must be one of {', '.join(HEAD_FEATURES)} (got {features!r})")
    device = next(model.parameters()).device
    model.config = dataclasses.replace(model.config, head_classes=list(classes), head_multi_label=multi_label,
                                       head_features=features)
    model.head = nn.utils.skip_init(nn.Linear, model.config.embed_dim, len(classes), device=device)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    return model


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _loader(model, rows: list[Row], batch_size: int, workers: int, sampler=None):
    dataset = ImageReportDataset(rows, ImageTransform.of(model.config), model.config.modalities)
    return make_loader(dataset, sampler, workers=workers, batch_size=batch_size)


@torch.no_grad()
def _per_image(model, rows: list[Row], of_batch: Callable, width: int, batch_size: int, workers: int,
               progress: bool = False, desc: str = "") -> tuple[list[int], torch.Tensor]:
    """(indices into ``rows`` of the images that could be read, ``of_batch(encode_image(batch))`` of them
    [n, width]): every image once, without augmentation."""
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    position = {r.row: i for i, r in enumerate(rows)}
    kept, parts = [], []
    for batch in tqdm(_loader(model, rows, batch_size, workers), desc=desc, unit="batch", disable=not progress,
                      leave=False):
        if batch["rows"]:
            kept += [position[n] for n in batch["rows"]]
            parts.append(of_batch(model.encode_image(batch["images"].to(device))).float().cpu())
    return kept, torch.cat(parts) if parts else torch.empty(0, width)


def embed_features(model, rows: list[Row], features: str, batch_size: int = 64, workers: int = 0,
                   progress: bool = False, desc: str = "embedding") -> tuple[list[int], torch.Tensor]:
    """(indices of the readable rows, what the head reads of each image [n, D]: ``head_input``)."""
    return _per_image(model, rows, lambda e: head_input(e.global_emb, e.local_map, features),
                      model.config.embed_dim, batch_size, workers, progress, desc)


def head_logits(model, rows: list[Row], batch_size: int = 64, workers: int = 0) -> tuple[list[int], torch.Tensor]:
    """(indices of the readable rows, the head's logits [n, C]) of ``rows``, through the model as
    ``classify`` runs it."""
    return _per_image(model, rows, model.head_logits, len(model.config.head_classes), batch_size, workers)


def predict(model, rows: list[Row], batch_size: int = 64, workers: int = 0) -> tuple[list[int], torch.Tensor]:
    """(indices of the readable rows, the head's probabilities [n, C]): ``head_logits`` as ``classify``
    returns them (``head_probabilities``)."""
    kept, logits = head_logits(model, rows, batch_size, workers)
    return kept, head_probabilities(logits, model.config.head_multi_label)


def _criterion(multi_label: bool, weights: torch.Tensor | None) -> nn.Module:
    if multi_label:
        return nn.BCEWithLogitsLoss(pos_weight=weights)
    return nn.CrossEntropyLoss(weight=weights)


# ------------------------------------------------------------------------------------------------ result
@dataclass
class FinetuneResult:
    model: object  # the fine-tuned MedMoE (with its head; adapters merged)
    record: dict  # what finetune.json holds
    folder: Path | None = None  # where it was saved


class _Best:
    """The epoch with the best val score (ties: the lower val loss), its state and the epochs since."""

    def __init__(self):
        self.key, self.epoch, self.state, self.since = None, 0, None, 0

    def offer(self, epoch: int, score: float, loss: float, state: Callable[[], dict]) -> None:
        key = (score, -loss)
        if self.key is None or key > self.key:
            self.key, self.epoch, self.state, self.since = key, epoch, state(), 0
        else:
            self.since += 1


LBFGS_ITERATIONS = 10  # L-BFGS iterations per linear "epoch" (one full-batch round, then the val split is scored)


def _fit_linear(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], head: nn.Linear, multi_label: bool,
                weights: torch.Tensor | None, l2: float, epochs: int, patience: int, history: list,
                progress: bool) -> int:
    """Train ``head`` on cached features ``x["train"]`` (standardised; the standardisation folded into the
    head at the end) as ``eval.probe``'s logistic regression is fitted: full batch, L-BFGS, an L2 penalty
    ``l2 * |W|^2`` on the mean loss; an epoch is ``LBFGS_ITERATIONS`` iterations, after which the val split
    is scored and the best epoch kept (early stopping). Deterministic: the head starts at zero and there is
    no sampling. Returns the best epoch."""
    from tqdm.auto import tqdm

    mean, sd = x["train"].mean(0), x["train"].std(0).clamp_min(1e-6)
    device = head.weight.device
    z = {s: ((v - mean) / sd).to(device) for s, v in x.items()}
    yt, yv = y["train"].to(device), y["val"].to(device)
    layer = nn.utils.skip_init(nn.Linear, head.in_features, head.out_features, device=device)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    optimizer = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS, history_size=20,
                                  line_search_fn="strong_wolfe")
    criterion = _criterion(multi_label, None if weights is None else weights.to(device))

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(layer(z["train"]), yt) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    best = _Best()
    with tqdm(range(1, epochs + 1), desc="linear head", unit="epoch", disable=not progress, leave=False) as bar:
        for epoch in bar:
            optimizer.step(closure)
            with torch.no_grad():
                train_loss = float(criterion(layer(z["train"]), yt))
                logits = layer(z["val"])
                val_loss = float(criterion(logits, yv))
                probs = logits.sigmoid() if multi_label else logits.softmax(1)
            metrics = classification_metrics(probs.cpu(), yv.cpu(), [str(i) for i in range(layer.out_features)],
                                             multi_label)
            score = _score(metrics, multi_label)
            history.append({"stage": "linear", "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                            "val_score": score})
            best.offer(epoch, score, val_loss, lambda: {k: v.detach().clone() for k, v in layer.state_dict().items()})
            bar.set_postfix(loss=f"{train_loss:.4f}", val=f"{score:.4f}")
            if best.since >= patience:
                break
    layer.load_state_dict(best.state)
    with torch.no_grad():  # logits = W (x - mean) / sd + b = (W / sd) x + (b - W mean / sd)
        w = layer.weight / sd.to(device)
        head.weight.copy_(w)
        head.bias.copy_(layer.bias - w @ mean.to(device))
    return best.epoch


def _trainable(model, mode: str, args: FinetuneArgs) -> list[str]:
    """Freeze ``model`` but what ``mode`` trains; returns the adapted layers' names (lora)."""
    model.requires_grad_(False)
    adapted = []
    if mode == "full":
        for module in model.towers()[0]:  # image encoder, image router, head
            module.requires_grad_(True)
    else:
        from ..model.lora import add_lora, lora_parameters

        adapted = add_lora(model.image.backbone, args.rank, args.alpha, derive_seed(args.seed, "finetune", "lora"))
        for p in lora_parameters(model.image.backbone):
            p.requires_grad_(True)
        model.head.requires_grad_(True)
    return adapted


def _fit_encoder(model, data: Labelled, weights: torch.Tensor | None, args: FinetuneArgs, device: torch.device,
                 history: list, log: Callable[[str], None]) -> tuple[int, int]:
    """Train the image side (``full``) or its adapters (``lora``) with the head on augmented images, stopping
    early on the val split; returns (best epoch, training rows that could not be read)."""
    from tqdm.auto import tqdm

    epochs, patience, lr = args.setting("epochs"), args.setting("patience"), args.setting("lr")
    rows, targets = data.rows["train"], data.targets["train"]
    if len(rows) < args.batch_size:
        raise DataError(f"--batch-size {args.batch_size} is larger than the {len(rows)} labelled training rows")
    target_of = {r.row: i for i, r in enumerate(rows)}
    sampler = ResumableBatches(len(rows), args.batch_size, derive_seed(args.seed, "finetune", "order"))
    dataset = ImageReportDataset(rows, ImageTransform.of(model.config), model.config.modalities)
    if not args.augment:
        dataset = _NoAugment(dataset)
    loader = make_loader(dataset, sampler, workers=args.workers, seed=args.seed)
    steps = epochs * sampler.steps_per_epoch
    optimizer = torch.optim.AdamW(param_groups(model, lr, args.setting("weight_decay"), 1.0), lr=lr)
    warmup = min(sampler.steps_per_epoch, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, steps))
    criterion = _criterion(data.multi_label, None if weights is None else weights.to(device))
    trainable = [p for p in model.parameters() if p.requires_grad]
    best, unreadable, batches = _Best(), set(), iter(loader)
    for epoch in range(1, epochs + 1):
        model.eval()  # batch norm keeps the base's statistics (the experts' per-expert groups are small batches)
        total, seen = 0.0, 0
        with tqdm(range(sampler.steps_per_epoch), desc=f"{args.mode} epoch {epoch}/{epochs}", unit="step",
                  disable=not args.progress, leave=False) as bar:
            for _ in bar:
                batch = next(batches)
                unreadable |= {s["row"] for s in batch["skipped"]}
                if len(batch["rows"]) < 2:
                    continue
                y = targets[[target_of[n] for n in batch["rows"]]].to(device)
                loss = criterion(model.head_logits(model.encode_image(batch["images"].to(device))), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                total, seen = total + loss.item() * len(y), seen + len(y)
                bar.set_postfix(loss=f"{total / seen:.4f}")
        val = _evaluate(model, data, "val", weights, args, device)
        score = _score(val, data.multi_label)
        history.append({"stage": args.mode, "epoch": epoch, "train_loss": total / max(1, seen),
                        "val_loss": val["loss"], "val_score": score})
        log(f"{args.mode} epoch {epoch}: train loss {total / max(1, seen):.4f}, val loss {val['loss']:.4f}, "
            f"val {'macro AUC' if data.multi_label else 'accuracy'} {score:.4f}")
        best.offer(epoch, score, val["loss"], lambda: {k: v.detach().clone() for k, v in model.state_dict().items()})
        if best.since >= patience:
            break
    model.load_state_dict(best.state)
    return best.epoch, len(unreadable)


class _NoAugment(torch.utils.data.Dataset):
    """A dataset read without its augmentation seeds (``--no-augment``)."""

    def __init__(self, dataset):
        self.dataset, self.tokenize = dataset, dataset.tokenize

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset[key[0] if isinstance(key, tuple) else key]


@torch.no_grad()
def _evaluate(model, data: Labelled, split: str, weights: torch.Tensor | None, args: FinetuneArgs,
              device: torch.device) -> dict:
    """The head's metrics (and weighted loss) on ``split``, images that cannot be read left out."""
    kept, logits = head_logits(model, data.rows[split], max(args.batch_size, 64), args.workers)
    targets = data.targets[split][kept]
    metrics = classification_metrics(head_probabilities(logits, data.multi_label), targets, data.classes,
                                     data.multi_label)
    if kept:
        metrics["loss"] = float(_criterion(data.multi_label, weights)(logits, targets))
    metrics["unreadable"] = len(data.rows[split]) - len(kept)
    return metrics


def finetune(model, args: FinetuneArgs, base: str | None = None, log: Callable[[str], None] = lambda _: None
             ) -> FinetuneResult:
    """Fine-tune a copy of ``model`` on ``args.data``'s labels (the module's docstring says how); saves it to
    ``args.out`` when given. ``base``: what to call the starting model in the record."""
    kinds = parse_log_to(args.log_to)
    if kinds and not args.out:
        raise ConfigError("--log-to needs --out: the trackers write into the output folder")
    trackers = Trackers(kinds, args.out or ".", Path(args.out or ".").name, dataclasses.asdict(args))
    try:
        return _finetune(model, args, base, log, trackers)
    finally:
        trackers.close()


def _finetune(model, args: FinetuneArgs, base: str | None, log: Callable[[str], None], trackers: Trackers
              ) -> FinetuneResult:
    started = time.monotonic()
    data = read_labelled(args.data, args.labels, args.multi_label, args.uncertain)
    for split, n in data.unlabelled.items():
        if n:
            log(f"{split}: {n} rows without a label skipped")
    device = _device(args.device)
    model = attach_head(copy.deepcopy(model).to(device), data.classes, data.multi_label, args.features)
    model.requires_grad_(False)
    weights = class_weights(data.targets["train"], len(data.classes), data.multi_label) if args.class_weights else None
    history = TrackedHistory(trackers)
    unreadable = {}
    best_epoch = None
    if args.mode == "linear" or args.head_init == "probe":
        features = {}
        targets = {}
        for split in ("train", "val"):
            kept, features[split] = embed_features(model, data.rows[split], args.features, max(args.batch_size, 64),
                                                   args.workers, args.progress, f"embedding {split}")
            targets[split] = data.targets[split][kept]
            unreadable[split] = len(data.rows[split]) - len(kept)
        if len(features["train"]) == 0 or len(features["val"]) == 0:
            raise DataError(f"{args.data}: no image of the {'train' if len(features['train']) == 0 else 'val'} split "
                            "could be read")
        # the linear stage of full and lora runs with linear's defaults; --epochs etc. are for their own stage
        linear = {k: args.setting(k) if args.mode == "linear" else MODE_DEFAULTS["linear"][k]
                  for k in ("weight_decay", "epochs", "patience")}
        best_epoch = _fit_linear(features, targets, model.head, data.multi_label, weights, linear["weight_decay"],
                                 linear["epochs"], linear["patience"], history, args.progress)
        log(f"linear head: best epoch {best_epoch} of {sum(h['stage'] == 'linear' for h in history)}")
    adapted = []
    if args.mode != "linear":
        adapted = _trainable(model, args.mode, args)
        # seeded here and restored after, for anything that draws from the global generator
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(derive_seed(args.seed, "finetune", "torch"))
            best_epoch, unreadable["train"] = _fit_encoder(model, data, weights, args, device, history, log)
        model.requires_grad_(False)
        if adapted:
            from ..model.lora import merge_lora

            merge_lora(model.image.backbone)
            model.requires_grad_(False)
    model.eval()
    val = _evaluate(model, data, "val", weights, args, device)
    test = _evaluate(model, data, "test", weights, args, device) if data.rows["test"] else None
    record = {
        "base_model": base, "mode": args.mode, "classes": data.classes, "multi_label": data.multi_label,
        "features": args.features,
        "args": {k: v for k, v in dataclasses.asdict(args).items() if k != "progress"} | {
            k: args.setting(k) for k in ("lr", "epochs", "patience", "weight_decay")},
        "sizes": data.sizes(), "unlabelled": data.unlabelled, "unusable_manifest_rows": data.unusable,
        "unreadable": {"train": unreadable.get("train", 0), "val": val["unreadable"],
                       "test": test["unreadable"] if test else 0},
        "train_counts": _counts(data), "class_weights": None if weights is None else weights.tolist(),
        "adapted_layers": len(adapted), "best_epoch": best_epoch, "history": list(history),
        "val": {k: v for k, v in val.items() if k != "unreadable"},
        "test": None if test is None else {k: v for k, v in test.items() if k != "unreadable"},
        "seconds": round(time.monotonic() - started, 1),
    }
    if test is None:
        log("no test split: no test metrics")
    folder = None
    if args.out:
        folder = model.save_pretrained(args.out)
        atomic_write_text(Path(folder) / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    return FinetuneResult(model, record, folder)


def _counts(data: Labelled) -> dict[str, int]:
    """Training rows (multi-class) or positive training rows (multi-label) of each class."""
    t = data.targets["train"]
    counts = t.sum(0) if data.multi_label else torch.bincount(t, minlength=len(data.classes))
    return dict(zip(data.classes, (int(c) for c in counts.tolist())))


def format_metrics(record: dict) -> str:
    """The test metrics of a ``finetune.json`` record as a few lines of text."""
    test = record.get("test")
    if not test or not test.get("n"):
        return "no test split"
    auc = test.get("macro_auc")
    lines = [f"test ({test['n']} images): accuracy {test['accuracy']:.4f}, macro AUC "
             f"{'-' if auc is None else f'{auc:.4f}'}" +
             (f", exact match {test['exact_match']:.4f}" if "exact_match" in test else
              f", balanced accuracy {test['balanced_accuracy']:.4f}")]
    if record["multi_label"]:
        width = max(len(c) for c in record["classes"]) + 2
        lines += [f"  {c:<{width}}AUC {'-' if v is None else f'{v:.4f}'}" for c, v in test["per_class_auc"].items()]
    return "\n".join(lines)
