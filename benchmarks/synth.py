"""MedSynth generation throughput on one core: images, masks and manifest written to a temp dir.

    PYTHONPATH=src python benchmarks/synth.py [--n 2000] [--size 96] [--dir /dev/shm] [--png pillow]

Prints one JSON object: {"size", "n", "png", "dir", "seconds", "images_per_s", "cpu_seconds"}. cpu_seconds
is the process CPU time (user + system). --dir sets where the temporary folder goes (default: the system
temp dir); a tmpfs such as /dev/shm takes a busy disk out of the measurement. --png pillow writes the
PNGs with Pillow (compress_level=1) instead of MedSynth's own writer, to check that the latter pays off.
"""
import argparse
import json
import os
import tempfile
import time

from medmoe.data.synth import generate, writer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="parent folder of the temporary output")
    parser.add_argument("--png", choices=("medmoe", "pillow"), default="medmoe", help="PNG writer (default: medmoe)")
    args = parser.parse_args()
    if args.png == "pillow":
        from PIL import Image

        writer._write_png = lambda path, image: Image.fromarray(image).save(path, compress_level=1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    with tempfile.TemporaryDirectory(dir=args.dir) as warm:  # fill the per-size caches first
        generate(warm, 20, size=args.size, progress=False)
    with tempfile.TemporaryDirectory(dir=args.dir) as out:
        wall, cpu = time.perf_counter(), time.process_time()
        generate(out, args.n, seed=args.seed, size=args.size, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"size": args.size, "n": args.n, "png": args.png, "dir": os.path.dirname(out), "seconds": round(wall, 3),
                      "images_per_s": round(args.n / wall, 1), "cpu_seconds": round(cpu, 3)}))


if __name__ == "__main__":
    main()
