"""``medmoe train``, ``finetune``, ``demo``, ``config`` and ``flops``: building and training models."""
from __future__ import annotations

import json
import os

from .. import registry
from ..errors import ConfigError
from ..options import add_options, given_options
from ..train.args import TrainArgs
from ..train.finetune_args import FinetuneArgs
from .common import add_config_options, add_json, add_model, load_model, model_config, write_json


def _train_args(args) -> TrainArgs:
    return TrainArgs.from_recipe(**given_options(args, TrainArgs))


def cmd_train(args) -> int:
    from ..train.loop import train

    if args.resume and args.out is None:
        args.out = args.resume
    if args.data is None or args.out is None:
        raise ConfigError("train needs --data MANIFEST and --out RUN (or --resume RUN)")
    result = train(model_config(args), _train_args(args))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps(result))
    return 0


def cmd_finetune(args) -> int:
    import sys

    from ..train.finetune import FinetuneArgs, finetune, format_metrics

    if args.data is None or args.out is None:
        raise ConfigError("finetune needs --data MANIFEST and --out DIR")
    settings = FinetuneArgs(**given_options(args, FinetuneArgs))  # --labels included
    result = finetune(load_model(args), settings, base=str(args.model),
                      log=lambda line: print(f"medmoe: {line}", file=sys.stderr))
    record = result.record
    print(f"fine-tuned ({record['mode']}, head on {record['features']} features, "
          f"{'multi-label' if record['multi_label'] else 'multi-class'}) on {len(record['classes'])} classes: "
          f"{', '.join(record['classes'])}")
    print(f"train/val/test: {record['sizes']['train']}/{record['sizes']['val']}/{record['sizes']['test']} labelled "
          f"rows; best epoch {record['best_epoch']}")
    print(format_metrics(record))
    print(f"wrote {result.folder} (model folder and finetune.json)")
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo, synth_manifest

    configs = {v: model_config(args, v) for v in args.variants}
    args.data, args.resume = str(synth_manifest(args.out)), None
    run_demo(configs, _train_args(args), n=args.n)
    return 0


def cmd_config(args) -> int:
    print(json.dumps(model_config(args).to_dict(), indent=2))
    return 0


def cmd_flops(args) -> int:
    from ..eval.flops import image_side_cost

    cost = image_side_cost(model_config(args))
    print(f"image side of preset {args.preset!r}:")
    print(f"  parameters, all experts   {cost['params_total'] / 1e6:8.2f} M")
    print(f"  parameters, one expert    {cost['params_active'] / 1e6:8.2f} M")
    print(f"  GMACs, one expert active  {cost['gmacs_active']:8.3f}")
    print(f"  GMACs, all experts run    {cost['gmacs_all_experts']:8.3f}")
    write_json(args.json, cost)
    return 0


def register(sub) -> None:
    variants = registry.names("variants")
    p = sub.add_parser("train", help="pretrain MedMoE on a manifest or webdataset shards",
                       description="Train on the manifest's train split (or on shards), score the val split "
                       "periodically. Data-parallel under torchrun: torchrun --nproc_per_node N -m medmoe train ...")
    p.add_argument("--variant", default="medmoe", choices=variants,
                   help=f"medmoe (default), or a baseline or ablation (src/medmoe/variants/): {', '.join(variants)}")
    add_config_options(p, recipe=True)
    add_options(p, TrainArgs)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="train a classifier on your labels (linear head, full or LoRA fine-tuning)",
                       description="Fine-tune a copy of --model on a labelled manifest: train on its train split, stop "
                       "early on val, report accuracy and macro AUC (per-class AUC for multi-label) on test, and write "
                       "a model folder with the head (medmoe load, classify, app and export use it) plus "
                       "finetune.json.")
    add_model(p)
    p.add_argument("--labels", nargs="+", default=["labels"], metavar="COLUMN",
                   help="the label column: a class name per row, or a list of names (multi-label); several columns: "
                   "one class each with 1/0/-1/blank cells, multi-label (default: labels)")
    add_options(p, FinetuneArgs)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("demo", help="MedSynth, MedMoE vs the static baseline, evaluation and report.md",
                       description="Generate MedSynth, train MedMoE and the static baseline with the same seed and "
                       "number of steps, evaluate both on the test split and write report.md. --minutes boxes the "
                       "time once: the first model's pace over its first steps fixes the steps every model trains.")
    p.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")
    p.add_argument("--n", type=int, default=3000, help="MedSynth images (default: 3000)")
    p.add_argument("--variants", nargs="+", default=["medmoe", "static"], choices=variants,
                   help="models to train and compare (default: medmoe static)")
    add_config_options(p, recipe=True)
    add_options(p, TrainArgs, skip=("data", "out", "resume", "val", "stop_at"),
                defaults={"steps": 240, "time_limit": 8.0},
                flags={"time_limit": "--minutes"})  # every model's steps; the time box that can lower them
    p.set_defaults(func=cmd_demo, preset="small", resume=None)

    p = sub.add_parser("config", help="print a preset's configuration with overrides applied",
                       description="Print the resolved configuration as JSON.")
    add_config_options(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("flops", help="parameters and multiply-adds of the image side (paper Table 3)",
                       description="Count parameters and GMACs of the image side with one expert active and "
                       "with all experts, from the configuration alone (no weights needed).")
    add_config_options(p)
    add_json(p, "also write the numbers as JSON")
    p.set_defaults(func=cmd_flops)
