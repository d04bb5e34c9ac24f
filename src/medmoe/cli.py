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

    p = sub.add_parser("config", help="print a preset's configuration with overrides applied",
                       description="Print the resolved configuration as JSON.")
    _add_model_options(p)
    p.set_defaults(func=cmd_config)
    return parser


USER_ERRORS = (ConfigError, FileNotFoundError, NotADirectoryError, PermissionError, ImportError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        print(f"medmoe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medmoe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
