"""What several commands share: one ``--model``, one ``--out``, model configuration options, JSON and
Markdown output written atomically."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import registry
from ..config import MedMoEConfig, load_config, parse_overrides
from ..errors import ConfigError
from ..options import add_options, given_options

MODEL_HELP = "a model folder, a training run (its newest checkpoint) or a Hugging Face Hub id org/name"


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="MODEL", help=MODEL_HELP)


def add_compile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone and the text encoder "
                   "(faster after a slow first call; eager with a warning where it cannot run)")


def load_model(args):
    """The model ``--model`` names (``medmoe.load``), compiled with ``--compile``."""
    from ..model.medmoe import load

    return load(args.model, compile=getattr(args, "compile", False))


def add_out(p: argparse.ArgumentParser, metavar: str, help: str, legacy_positional: bool = False) -> None:
    """``--out``; with ``legacy_positional``, the output as the positional argument it used to be, for one
    more release (``out_of``)."""
    p.add_argument("--out", metavar=metavar, required=not legacy_positional, help=help)
    if legacy_positional:
        p.add_argument("legacy_out", nargs="?", help=argparse.SUPPRESS)


def out_of(args, command: str) -> str:
    """``--out``, or the old positional output with a warning that it goes in the next release."""
    if args.out and args.legacy_out:
        raise ConfigError(f"{command}: give the output once, as --out")
    if args.legacy_out:
        print(f"medmoe: warning: '{command} OUT' is deprecated, use '{command} --out OUT'", file=sys.stderr)
    if not (args.out or args.legacy_out):
        raise ConfigError(f"{command} needs --out")
    return args.out or args.legacy_out


def add_json(p: argparse.ArgumentParser, help: str = "also write the result as JSON") -> None:
    p.add_argument("--json", metavar="FILE", help=help)


def write_text(path: str | None, text: str) -> None:
    """Write ``text`` to ``path`` (if given) atomically, creating its folder."""
    if path:
        from ..files import atomic_write_text

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)


def write_json(path: str | None, payload) -> None:
    write_text(path, json.dumps(payload, indent=2) + "\n")


def add_config_options(p: argparse.ArgumentParser, recipe: bool = False) -> None:
    """--preset and --set; with ``recipe``, --recipe and the config fields declared as options (--freeze-text)."""
    p.add_argument("--preset", default="tiny",
                   help=f"model preset: {', '.join(registry.names('presets'))} (default: tiny)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set num_experts=4 --set swin.embed_dim=32 (repeatable)")
    if recipe:
        p.add_argument("--recipe", default="default", choices=registry.names("recipes"),
                       help="training recipe (src/medmoe/recipes/): optimiser, schedule, clipping, epochs, loss "
                       "weights, temperatures and text settings; options and --set given here override it "
                       "(default: default)")
        add_options(p, MedMoEConfig)


def model_config(args, variant: str | None = None) -> MedMoEConfig:
    """The configuration the options describe: preset, variant, recipe, config options, then --set."""
    return load_config(args.preset, variant or getattr(args, "variant", "medmoe"), getattr(args, "recipe", "default"),
                       **given_options(args, MedMoEConfig), **parse_overrides(args.overrides))
