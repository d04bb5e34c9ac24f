"""``torch.compile`` for a model's heavy parts: the Swin backbone and the text encoder, compiled in
place (their state dicts keep their keys). Shapes are static at first and become dynamic when a second
batch size or report length is seen (torch's automatic dynamic shapes): one more compilation, then none.
Marking them dynamic from the start made Dynamo's tracing of the Swin backbone 50x slower (tiny preset:
285 s against 5.8 s; a second batch size then costs 8.5 s once). The experts' grouped dispatch
(data-dependent group sizes) and the losses stay eager.

Where the compiler cannot run (no C++ compiler for the CPU backend, an unsupported platform or
Python), one warning line says so and the model runs eager, unchanged.
"""
from __future__ import annotations

import functools
import sys

import torch


@functools.cache
def compiler_problem(backend: str = "inductor") -> str | None:
    """Why ``torch.compile`` cannot run here (a trivial function compiled and run once), or None."""
    try:
        torch.compile(lambda x: x * 2 + 1, backend=backend)(torch.ones(2))
    except Exception as exc:  # whatever the compiler stack raises: missing compiler, unsupported platform
        return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    return None


def compile_model(model, backend: str = "inductor"):
    """Compile ``model``'s backbone and text encoder in place with ``backend`` (``torch.compile``'s; the
    default generates C++/Triton kernels) and return it; eager with one warning line on stderr where
    compiling is not possible."""
    problem = compiler_problem(backend)
    if problem is not None:
        print(f"medmoe: warning: torch.compile is not available here ({problem}); running eager", file=sys.stderr)
        return model
    model.image.backbone.compile(backend=backend)
    model.text.encoder.compile(backend=backend)
    return model
