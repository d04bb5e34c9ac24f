"""CPU data-parallel scaling: training throughput of the tiny preset with 1 and 2 torchrun processes
(gloo, one thread each, the same per-process batch) and the scaling efficiency, with the experts'
batch norm synchronised over the global batch (the default) and per process (--no-sync-bn).

    PYTHONPATH=src python benchmarks/scaling.py [--steps 40] [--batch 16]

Throughput is global images per second between the first and the last logged step of each run
(start-up and the first steps excluded), read from the run's metrics.jsonl. Efficiency is
throughput(2) / (2 x throughput(1)). Synchronised batch norm costs one all-reduce per batch-norm
layer and expert in forward and in backward, each a point where the processes wait for each other.
Prints one JSON object.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def throughput(data: Path, out: Path, procs: int, steps: int, batch: int, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", "medmoe", "train", "--preset", "tiny", "--data", str(data), "--out", str(out),
           "--steps", str(steps), "--batch-size", str(batch), "--workers", "0", "--eval-every", str(10 * steps),
           "--checkpoint-every", str(10 * steps), "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    logged = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    first, last = logged[0], logged[-1]
    images = (last["step"] - first["step"]) * batch * procs
    return {"processes": procs, "global_batch": batch * procs, "options": " ".join(extra),
            "images_per_s": round(images / (last["time_s"] - first["time_s"]), 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16, help="per-process batch (default: 16)")
    args = parser.parse_args()
    from medmoe.data.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        data = generate(Path(tmp) / "data", n=20 * args.batch, seed=0, size=64, progress=False)
        runs = [throughput(data, Path(tmp) / f"run{i}", p, args.steps, args.batch, *extra)
                for i, (p, extra) in enumerate([(1, ()), (2, ()), (2, ("--no-sync-bn",))])]
    one = runs[0]["images_per_s"]
    result = {"preset": "tiny", "backend": "gloo", "threads_per_process": 1, "cpus": os.cpu_count(),
              "steps": args.steps, "runs": runs,
              "efficiency": round(runs[1]["images_per_s"] / (2 * one), 3),
              "efficiency_no_sync_bn": round(runs[2]["images_per_s"] / (2 * one), 3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
