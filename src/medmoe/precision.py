"""Half-precision inputs computed in float32: the losses' softmax/exp/log chains and the experts'
batch statistics need float32's range (used by ``losses.py`` and ``distributed.py``)."""
from __future__ import annotations

import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 if it is float16 or bfloat16, else unchanged (float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
