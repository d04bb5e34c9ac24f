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
import sys

from ..errors import DataError, MedMoEError, TrainingError
from . import data, evaluation, training, use


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medmoe", description="MedMoE: modality-specialised mixture-of-experts "
                                     "vision-language pretraining for medical images.")
    parser.add_argument("--version", action="version", version=f"medmoe {__import__('medmoe').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for family in (data, training, evaluation, use):
        family.register(sub)
    return parser


def _error(exc: Exception, status: int) -> int:
    print(f"medmoe: error: {exc}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, TrainingError) as exc:  # the data or the run could not be used
        return _error(exc, 1)
    except (MedMoEError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError) as exc:
        return _error(exc, 2)  # what the user asked for cannot be
    except KeyboardInterrupt:
        print("medmoe: interrupted", file=sys.stderr)
        return 130
