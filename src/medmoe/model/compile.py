"""``torch.compile`` for a model's heavy parts: the Swin backbone and the text encoder, compiled in
place (their state dicts keep their keys) with dynamic shapes, so a new batch size does not recompile.
The experts' grouped dispatch (data-dependent group sizes) and the losses stay eager.

Where the compiler cannot run (no C++ compiler for the CPU backend, an unsupported platform or
Python), one warning line says so and the model runs eager, unchanged.
"""
from __future__ import annotations

import functools
import sys

import torch


@functools.cache
def compiler_problem() -> str | None:
    """Why ``torch.compile`` cannot run here (a trivial function compiled and run once), or None."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2))
    except Exception as exc:  # whatever the compiler stack raises: missing compiler, unsupported platform
        return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    return None


def compile_model(model):
    """Compile ``model``'s backbone and text encoder in place and return it; eager with one warning
    line on stderr where compiling is not possible."""
    problem = compiler_problem()
    if problem is not None:
        print(f"medmoe: warning: torch.compile is not available here ({problem}); running eager", file=sys.stderr)
        return model
    model.image.backbone.compile(dynamic=True)
    model.text.encoder.compile(dynamic=True)
    return model
