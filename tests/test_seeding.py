import subprocess
import sys

import pytest
import torch

from medmoe.seeding import derive_seed


def test_same_keys_same_seed_in_any_process():
    code = "from medmoe.seeding import derive_seed; print(derive_seed(7, 'augment', 3, 12))"
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": h}).stdout.strip() for h in ("1", "2")}
    assert runs == {str(derive_seed(7, "augment", 3, 12))}


def test_distinct_keys_give_distinct_seeds_that_torch_accepts():
    keys = [(0,), (0, 0), (1, 0), (0, 1), (1 << 32,), (0, "augment"), (0, "epoch"), (0, "augment", 1, 2),
            (0, "augment", 2, 1), (1, "augment", 1, 2)]
    seeds = [derive_seed(*k) for k in keys]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 1 << 63 for s in seeds)
    torch.Generator().manual_seed(max(seeds))


@pytest.mark.parametrize("bad", [-1, 1 << 64, 1.5, True, None])
def test_bad_keys_are_refused(bad):
    with pytest.raises(ValueError, match="seed keys"):
        derive_seed(0, bad)
