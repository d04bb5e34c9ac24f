"""The GPU benchmark script runs end to end on CPU at the tiny preset and writes its JSON."""
import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a subprocess that trains and times the tiny preset

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_runs_on_cpu_and_writes_json(tmp_path):
    cmd = ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--device", "cpu", "--preset", "tiny", "--steps", "1",
           "--warmup", "1", "--batch", "4", "--infer-batch", "4", "--no-compile"]  # inductor on CPU: minutes
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OUT": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["device"] == "cpu" and result["preset"] == "tiny" and result["precision"] == "fp32"
    for name in ("train_medmoe", "train_global_only", "encode_image"):
        assert result[f"{name}_images_per_s"] > 0 and result[f"{name}_peak_memory_gb"] > 0
    assert result["train_medmoe_vs_global_only"] == round(
        result["train_medmoe_images_per_s"] / result["train_global_only_images_per_s"], 3)
    assert (tmp_path / "gpu.log").is_file()
