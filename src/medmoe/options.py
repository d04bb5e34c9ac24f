"""Command-line options declared once, on dataclass fields.

    batch_size: int = option(32, "images per process and micro-batch")

is a field of the dataclass and the option ``--batch-size N`` (type from the annotation, help with
the default). A bool field is a switch: ``--name`` when it defaults to False, ``--no-name`` when
True. ``option(..., flag="--quiet")`` renames the switch or option; other keywords (``choices``,
``metavar``) go to argparse, and ``choices`` is checked when the dataclass is built
(``check_choices``). A field without ``option`` is not on the command line.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from .errors import ConfigError


def option(default: Any = dataclasses.MISSING, help: str = "", **cli: Any) -> Any:
    """A dataclass field that is also a command-line option (``default`` omitted: a required field)."""
    return dataclasses.field(default=default, metadata={"help": help, **cli})


def _scalar(annotation) -> type:
    """``int`` for ``int`` and ``int | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), defaults: dict | None = None,
                flags: dict | None = None) -> None:
    """Add the ``option`` fields of dataclass ``cls`` but ``skip`` to ``parser``. An option the user
    does not give parses as None (see ``given_options``), unless this parser has its own default
    in ``defaults``; ``flags`` renames options for this parser."""
    defaults, flags = defaults or {}, flags or {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or f.name in skip:
            continue
        cli = dict(f.metadata)
        help, flag = cli.pop("help"), flags.get(f.name, cli.pop("flag", None))
        default = defaults.get(f.name, f.default)
        kind = _scalar(hints[f.name])
        if kind is bool:
            flag = flag or ("--no-" if default else "--") + f.name.replace("_", "-")
            cli["action"] = "store_false" if default else "store_true"
        else:
            cli["type"] = kind
            cli.setdefault("metavar", {int: "N", float: "X"}.get(kind))
            if default not in (None, dataclasses.MISSING):
                help += f" (default: {default})"
        parser.add_argument(flag or "--" + f.name.replace("_", "-"), dest=f.name, help=help.replace("%", "%%"),
                            default=defaults.get(f.name), **cli)


def given_options(namespace: argparse.Namespace, cls) -> dict:
    """The ``cls`` fields the parsed ``namespace`` holds a value for (given or defaulted by its parser)."""
    return {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)
            if getattr(namespace, f.name, None) is not None}


def check_choices(instance) -> None:
    """ConfigError for a field whose value is not one of its option's ``choices``."""
    for f in dataclasses.fields(instance):
        value, choices = getattr(instance, f.name), f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{f.name} must be one of {', '.join(map(str, choices))} (got {value!r})")
