"""The ``medmoe`` command, one module per family of subcommands: ``data.py`` (synth, data check | shard |
prepare | label-modality), ``training.py`` (train, demo, config, flops), ``evaluation.py`` (eval,
benchmark, explain) and ``use.py`` (classify, app, export); ``common.py`` holds the options they share
(one ``--model``, one ``--out``). Heavy imports happen inside the commands.

User errors (bad option, unknown preset, missing file, a missing optional extra) end with one
``medmoe: error:`` line and exit status 2, not a traceback; unusable data (no usable manifest row, an
unreadable image) and a failed training run exit with 1 (``medmoe/errors.py``). Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..data.io import MAX_PIXELS_ENV
from ..errors import DataError, MedMoEError, TrainingError
from . import data, evaluation, training, use


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medmoe", description="MedMoE: modality-specialised mixture-of-experts "
                                     "vision-language pretraining for medical images.")
    parser.add_argument("--version", action="version", version=f"medmoe {__import__('medmoe').__version__}")
    parser.add_argument("--max-pixels", type=int, metavar="N",
                        help="refuse image files that declare more pixels than N (rows x columns x frames x samples), "
                        "before decoding them, in every format; default: $MEDMOE_MAX_PIXELS, else Pillow's 89,478,485")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (data, training, evaluation, use):
        family.register(sub)
    return parser


def _error(exc: Exception, status: int) -> int:
    print(f"medmoe: error: {exc}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_pixels is not None:  # the environment reaches data workers and torchrun's processes too
        os.environ[MAX_PIXELS_ENV] = str(args.max_pixels)
    try:
        return args.func(args)
    except (DataError, TrainingError) as exc:  # the data or the run could not be used
        return _error(exc, 1)
    except (MedMoEError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError) as exc:
        return _error(exc, 2)  # what the user asked for cannot be
    except KeyboardInterrupt:
        print("medmoe: interrupted", file=sys.stderr)
        return 130
