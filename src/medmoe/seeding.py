"""Every random stream of training is keyed by what it is for, so resuming replays it exactly.

``derive_seed(seed, "augment", step, index)`` names the stream: the run's seed, what it drives and
where (step, rank, sample). numpy's ``SeedSequence`` mixes the keys, so nearby keys give unrelated
streams (no ``seed * 1000003 + step`` collisions) and the result fits ``torch.manual_seed``.
"""
from __future__ import annotations

import zlib

import numpy as np


def derive_seed(*keys: int | str) -> int:
    """A seed in [0, 2**63) from the keys: integers in [0, 2**64) or strings (hashed with CRC-32,
    stable across processes, unlike ``hash``)."""
    words = [len(keys)]  # the count and two 32-bit words per key: distinct keys, distinct entropy
    for key in keys:
        key = zlib.crc32(key.encode()) if isinstance(key, str) else key
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= key < 1 << 64:
            raise ValueError(f"seed keys are integers in [0, 2**64) or strings, got {key!r}")
        words += [int(key) & 0xFFFF_FFFF, int(key) >> 32]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) >> 1
