"""The ``medmoe`` command. Each subcommand is a small function; heavy imports happen inside.

User errors (bad option, unknown preset, unreadable file) end with one ``medmoe: error:``
line and exit status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, list_presets, load_config, parse_overrides


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help=f"model preset: {', '.join(list_presets())} (default: tiny)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set num_experts=4 --set swin.embed_dim=32 (repeatable)")


def _add_training_options(p: argparse.ArgumentParser, func) -> None:
    _add_model_options(p)
    p.add_argument("--batch-size", type=int, help="images per step (default: 32)")
    p.add_argument("--seed", type=int, help="random seed (default: 0)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 3e-4)")
    p.add_argument("--warmup", type=int, help="warm-up steps (default: 50)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: 200)")
    p.add_argument("--eval-every", type=int, help="steps between held-out scorings (default: 100)")
    p.add_argument("--workers", type=int, help="data-loading processes (default: CPUs - 1, at most 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=func)


def _config(args):
    return load_config(args.preset, **parse_overrides(args.overrides))


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def cmd_config(args) -> int:
    print(json.dumps(_config(args).to_dict(), indent=2))
    return 0


def cmd_flops(args) -> int:
    from .eval.flops import image_side_cost

    cost = image_side_cost(_config(args))
    print(f"image side of preset {args.preset!r}:")
    print(f"  parameters, all experts   {cost['params_total'] / 1e6:8.2f} M")
    print(f"  parameters, one expert    {cost['params_active'] / 1e6:8.2f} M")
    print(f"  GMACs, one expert active  {cost['gmacs_active']:8.3f}")
    print(f"  GMACs, all experts run    {cost['gmacs_all_experts']:8.3f}")
    _write_json(args.json, cost)
    return 0


def cmd_synth(args) -> int:
    from .data.synth import Difficulty, generate

    defaults = Difficulty()
    difficulty = Difficulty(
        noise=defaults.noise if args.noise is None else args.noise,
        contrast=defaults.contrast if args.contrast is None else args.contrast,
        lesion_scale=defaults.lesion_scale if args.lesion_scale is None else args.lesion_scale,
    )
    if args.n < 1 or args.size < 32:
        raise ConfigError("--n must be >= 1 and --size >= 32")
    manifest = generate(args.out, n=args.n, seed=args.seed, size=args.size, difficulty=difficulty,
                        progress=not args.quiet)
    print(f"wrote {args.n} MedSynth images and {manifest}")
    return 0


def cmd_data_check(args) -> int:
    from .data.manifest import ManifestError, read_manifest

    manifest = read_manifest(args.manifest, decode=True)
    summary = manifest.summary()
    print(f"{args.manifest}: {summary['rows']} rows, {summary['usable']} usable")
    for modality, count in summary["per_modality"].items():
        print(f"  {modality:<12} {count}")
    for bad in summary["unusable"]:
        print(f"  row {bad['row']}: {bad['reason']}")
    _write_json(args.json, summary)
    if not manifest.rows:
        raise ManifestError(f"{args.manifest}: no usable row")
    return 0


def _train_args(args):
    from .train.loop import TrainArgs

    fields = {k: getattr(args, k) for k in ("data", "out", "steps", "batch_size", "seed", "lr", "warmup",
                                            "checkpoint_every", "eval_every", "workers", "time_limit", "resume")}
    return TrainArgs(**{k: v for k, v in fields.items() if v is not None}, progress=not args.quiet)


def cmd_train(args) -> int:
    from .train.loop import train

    if args.resume and args.out is None:
        args.out = args.resume
    if args.data is None or args.out is None:
        raise ConfigError("train needs --data MANIFEST and --out RUN (or --resume RUN)")
    result = train(_config(args), _train_args(args))
    print(json.dumps(result))
    return 0


def cmd_demo(args) -> int:
    from .data.synth import generate
    from .train.loop import train

    root = Path(args.out)
    manifest = root / "medsynth" / "manifest.jsonl"
    if not manifest.is_file():
        print(f"generating MedSynth ({args.n} images) in {manifest.parent}")
        generate(manifest.parent, n=args.n, seed=args.seed or 0, size=_config(args).image_size)
    args.data, args.out, args.resume = str(manifest), str(root / "run"), None
    print(f"training preset {args.preset!r} for up to {args.time_limit} min (checkpoints in {args.out})")
    result = train(_config(args), _train_args(args))
    print(f"\nmodel:   {Path(args.out) / 'checkpoints'} (MedMoE.from_pretrained('{args.out}'))")
    print(f"log:     {Path(args.out) / 'metrics.jsonl'}")
    if "i2t_r1" in result:
        print(f"held-out retrieval R@1 over {result['n']} pairs: image->text {result['i2t_r1']:.3f}, "
              f"text->image {result['t2i_r1']:.3f} (chance {result['chance_r1']:.3f})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medmoe", description="MedMoE: modality-specialised mixture-of-experts "
                                     "vision-language pretraining for medical images.")
    parser.add_argument("--version", action="version", version=f"medmoe {__import__('medmoe').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="generate the built-in MedSynth dataset",
                       description="Write MedSynth images (PNG), finding masks and manifest.jsonl to OUT.")
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=2000, help="number of images (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default: 96)")
    p.add_argument("--noise", type=float, help="noise scale (default: the generator's)")
    p.add_argument("--contrast", type=float, help="lesion contrast scale (default: the generator's)")
    p.add_argument("--lesion-scale", type=float, help="lesion size scale (default: the generator's)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("flops", help="parameters and multiply-adds of the image side (paper Table 3)",
                       description="Count parameters and GMACs of the image side with one expert active and "
                       "with all experts, from the configuration alone (no weights needed).")
    _add_model_options(p)
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("data", help="inspect manifests", description="Inspect manifests.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("check", help="read every row and image of a manifest and summarise",
                            description="Read every row of MANIFEST (decoding each image) and print rows, usable "
                            "rows, per-modality counts and each unusable row with its reason. Exit 1 if none is usable.")
    q.add_argument("manifest")
    q.add_argument("--json", metavar="FILE", help='write {"rows", "usable", "per_modality", "unusable"} as JSON')
    q.set_defaults(func=cmd_data_check)

    p = sub.add_parser("train", help="pretrain MedMoE on a manifest",
                       description="Train on the manifest's train split, score the val split periodically.")
    p.add_argument("--data", metavar="MANIFEST", help="JSONL or CSV manifest")
    p.add_argument("--out", metavar="RUN", help="run folder (checkpoints, metrics.jsonl)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint")
    p.add_argument("--steps", type=int, help="total optimisation steps (default: 1000)")
    p.add_argument("--time-limit", type=float, metavar="MIN", help="stop (with a checkpoint) after MIN minutes")
    _add_training_options(p, cmd_train)

    p = sub.add_parser("demo", help="generate MedSynth and train the small preset (time-boxed)",
                       description="Generate MedSynth, train a preset for a few minutes, report retrieval.")
    p.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")
    p.add_argument("--n", type=int, default=3000, help="MedSynth images (default: 3000)")
    p.add_argument("--steps", type=int, default=600, help="planned steps (default: 600)")
    p.add_argument("--minutes", dest="time_limit", type=float, default=8.0,
                   help="time box for training in minutes (default: 8)")
    _add_training_options(p, cmd_demo)
    p.set_defaults(preset="small", resume=None)

    p = sub.add_parser("config", help="print a preset's configuration with overrides applied",
                       description="Print the resolved configuration as JSON.")
    _add_model_options(p)
    p.set_defaults(func=cmd_config)
    return parser


def _user_errors() -> tuple:
    from .data.manifest import ManifestError

    return (ConfigError, ManifestError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as exc:
        print(f"medmoe: error: {exc}", file=sys.stderr)
        return 1 if type(exc).__name__ == "ManifestError" else 2
    except KeyboardInterrupt:
        print("medmoe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
