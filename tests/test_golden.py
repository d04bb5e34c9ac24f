"""The tiny preset's outputs on fixed weights and inputs match the stored golden file to 1e-5.

A failure means a change altered what the model computes. If that was intended, regenerate with
``.venv/bin/python tests/golden/regenerate.py`` and commit the new files with the change.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "golden" / "regenerate.py"
spec = importlib.util.spec_from_file_location("golden_regenerate", SCRIPT)
golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(golden)


def test_tiny_outputs_match_the_golden_file():
    from safetensors.torch import load_file

    if not golden.TENSORS.exists():
        pytest.fail(f"{golden.TENSORS} is missing: run `python tests/golden/regenerate.py`")
    metadata = json.loads(golden.METADATA.read_text())
    assert (metadata["seed"], metadata["input_seed"], metadata["preset"], metadata["reports"]) == (
        golden.SEED, golden.INPUT_SEED, golden.PRESET, golden.REPORTS), "inputs changed: regenerate"
    expected, actual = load_file(golden.TENSORS), golden.golden_outputs()
    assert expected.keys() == actual.keys() == metadata["tensors"].keys()
    for name, tensor in actual.items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")
