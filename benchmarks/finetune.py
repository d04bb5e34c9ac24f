"""Fine-tuning vs the linear probe on the demo's data (issue 17 part 2): one `small` model trained for the
demo budget on MedSynth, then `medmoe finetune` in each mode with several seeds, against
`medmoe eval linear-probe` at 100 % of the labels on the same model and test split.

    PYTHONPATH=src python benchmarks/finetune.py --out runs/ft17 [--modes linear full lora] [--seeds 0 1 2]
        [--features global local] [--epochs 3]

Writes OUT/medsynth/ (MedSynth, n=3000, seed 0, 96 px) and OUT/base/ (medmoe train --preset small --steps 240)
when absent, OUT/probe.json, one OUT/runs/MODE-FEATURES-sSEED.json per fine-tuning (reused on a rerun) and
prints a summary as JSON and Markdown. Each fine-tuning record holds, beside finetune.json's metrics,
``group_accuracy``: test accuracy with each image's prediction restricted to the classes its modality has in
training, which is what the probe is given (it fits one classifier per modality; the fine-tuned head chooses
among every class of every modality).
"""
import argparse
import json
import statistics
from pathlib import Path

import torch

from medmoe.config import load_config
from medmoe.data.synth import generate
from medmoe.eval.embed import embed_rows
from medmoe.eval.probe import linear_probe_scores
from medmoe.model.medmoe import load
from medmoe.runs import latest_checkpoint
from medmoe.train.args import TrainArgs
from medmoe.train.finetune import FinetuneArgs, finetune, predict, read_labelled
from medmoe.train.loop import train


def group_accuracy(model, data) -> float:
    """Test accuracy with each prediction restricted to the training classes of the image's modality."""
    allowed: dict[str, set[int]] = {}
    for row, t in zip(data.rows["train"], data.targets["train"].tolist()):
        allowed.setdefault(row.modality, set()).add(t)
    rows, targets = data.rows["test"], data.targets["test"]
    kept, probabilities = predict(model, rows)
    correct = 0
    for i, p in zip(kept, probabilities):
        mask = torch.full_like(p, float("-inf"))
        mask[sorted(allowed[rows[i].modality])] = 0
        correct += int((p.log() + mask).argmax()) == int(targets[i])
    return correct / len(kept)


def mean_sd(values):
    values = [v for v in values if v is not None]
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else (None, None)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ft17")
    parser.add_argument("--modes", nargs="+", default=["linear", "full", "lora"])
    parser.add_argument("--features", nargs="+", default=["global"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="full and lora: most epochs (default: the mode's)")
    parser.add_argument("--head-init", default="probe")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out)
    manifest = out / "medsynth" / "manifest.jsonl"
    if not manifest.is_file():
        generate(out / "medsynth", n=3000, seed=0, size=96)
    if latest_checkpoint(out / "base") is None:
        train(load_config("small"), TrainArgs(data=str(manifest), out=str(out / "base"), steps=240,
                                              workers=args.workers, progress=False))
    model = load(out / "base")

    probe_file = out / "probe.json"
    if not probe_file.is_file():
        from medmoe.data.manifest import read_manifest

        data = read_manifest(manifest)
        split = {s: embed_rows(model, data.split(s)) for s in ("train", "val", "test")}
        probe = linear_probe_scores(split["train"], split["test"], split["val"], fractions=(1.0,), seeds=args.seeds)
        probe_file.write_text(json.dumps(probe, indent=2))
    probe = json.loads(probe_file.read_text())

    data = read_labelled(manifest, ["labels"])
    summary = {"probe_100": probe["fractions"]["1.0"], "runs": {}}
    (out / "runs").mkdir(exist_ok=True)
    for mode in args.modes:
        for features in args.features:
            records = []
            for seed in args.seeds:
                tag = f"{mode}-{features}" + (f"-{args.head_init}" if mode != "linear" and args.head_init != "probe"
                                               else "") + (f"-e{args.epochs}" if args.epochs and mode != "linear" else "")
                path = out / "runs" / f"{tag}-s{seed}.json"
                if not path.is_file():
                    result = finetune(model, FinetuneArgs(
                        data=str(manifest), mode=mode, features=features, seed=seed, workers=args.workers,
                        epochs=args.epochs if mode != "linear" else None, head_init=args.head_init, progress=False),
                        base=str(out / "base"), log=print)
                    record = result.record | {"group_accuracy": group_accuracy(result.model, data)}
                    path.write_text(json.dumps(record, indent=2))
                    print(json.dumps({"run": path.stem, "test_accuracy": record["test"]["accuracy"],
                                      "group_accuracy": record["group_accuracy"],
                                      "macro_auc": record["test"]["macro_auc"], "seconds": record["seconds"]}),
                          flush=True)
                records.append(json.loads(path.read_text()))
            summary["runs"][tag] = {
                key: mean_sd([r["test"][key] for r in records]) for key in ("accuracy", "macro_auc", "balanced_accuracy")
            } | {"group_accuracy": mean_sd([r["group_accuracy"] for r in records]),
                 "best_epoch": [r["best_epoch"] for r in records], "seconds": mean_sd([r["seconds"] for r in records])}
    print(json.dumps(summary, indent=2))
    p = summary["probe_100"]
    print(f"\n| | test accuracy | accuracy within the modality's classes | macro AUC |\n|---|---|---|---|\n"
          f"| linear probe, 100 % (per modality) | - | {p['accuracy_mean']:.3f} ± {p['accuracy_sd']:.3f} | - |")
    for tag, r in summary["runs"].items():
        cells = [f"{r[k][0]:.3f} ± {r[k][1]:.3f}" for k in ("accuracy", "group_accuracy", "macro_auc")]
        print(f"| finetune {tag} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
