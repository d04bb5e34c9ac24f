"""Leakage check at scale: MedSynth pretraining rows against benchmark rows, some of them planted copies.

    PYTHONPATH=src python benchmarks/leakage.py [--pretrain 100000] [--benchmark 10000] [--planted 1000] [--dir DIR]

Generates MedSynth into DIR (kept and reused: seed 0 for pretraining, seed 1 for the benchmark, whose rows get
``dataset`` medsynth-<modality>), replaces --planted benchmark rows by copies of random pretraining images,
one transform each in turn (renamed copy, 16-bit PNG, JPEG at quality 75 or 90, resized 0.67-2.5x as PNG,
resized 0.67-2.5x as JPEG at quality 75-95), then runs ``find_leaks`` cold (every image hashed and cached),
warm (from the caches) and once more with looser thresholds to see recall and false matches at other
distances. Also measures nibabel's example4d.nii.gz (a real EPI volume, 2.2 mm slices): the distances
between its slices. Prints one JSON object.
"""
import argparse
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from medmoe.data.io import load_image
from medmoe.data.leakage import CACHE_SUFFIX, MAX_DISTANCE, MAX_HAMMING, find_leaks, hash_image
from medmoe.data.synth import generate

TRANSFORMS = ("renamed", "png16", "jpeg75", "jpeg90", "resized", "resized+jpeg")
LOOSE_DISTANCE = 0.03


def medsynth(folder: Path, n: int, seed: int) -> tuple[Path, float]:
    """MedSynth's manifest in ``folder`` (generated unless it already holds n rows) and the seconds spent."""
    manifest = folder / "manifest.jsonl"
    if manifest.is_file() and sum(1 for _ in open(manifest)) == n:
        return manifest, 0.0
    start = time.perf_counter()
    generate(folder, n=n, seed=seed, progress=False)
    return manifest, time.perf_counter() - start


def plant(source: Path, target: Path, transform: str, rng: np.random.Generator) -> Path:
    """Write ``transform`` of the 8-bit PNG ``source`` beside ``target`` (its suffix set by the format)."""
    image = Image.open(source)
    if transform == "renamed":
        return Path(shutil.copyfile(source, target.with_suffix(".png")))
    if transform == "png16":
        wide = np.asarray(image, dtype=np.uint16) * 257
        Image.fromarray(wide).save(target.with_suffix(".png"))
        return target.with_suffix(".png")
    if transform.startswith("resized"):
        scale = rng.uniform(0.67, 2.5)
        size = tuple(max(2, round(s * scale)) for s in image.size)
        image = image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
        if transform == "resized":
            image.save(target.with_suffix(".png"))
            return target.with_suffix(".png")
    quality = int(transform[4:]) if transform.startswith("jpeg") else int(rng.integers(75, 96))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    target.with_suffix(".jpg").write_bytes(buffer.getvalue())
    return target.with_suffix(".jpg")


def benchmark_manifest(folder: Path, pretrain: Path, planted: int, seed: int) -> tuple[Path, dict]:
    """benchmark.jsonl: the generated rows, --planted of them replaced by copies of pretraining images;
    returns it and {benchmark row: (pretraining row, transform)}."""
    rng = np.random.default_rng(seed)
    rows = [json.loads(line) for line in open(folder / "manifest.jsonl")]
    sources = [json.loads(line)["image"] for line in open(pretrain)]
    (folder / "planted").mkdir(exist_ok=True)
    truth = {}
    for k, b in enumerate(sorted(rng.choice(len(rows), planted, replace=False).tolist())):
        p, transform = int(rng.integers(len(sources))), TRANSFORMS[k % len(TRANSFORMS)]
        copy = plant(pretrain.parent / sources[p], folder / "planted" / f"copy{k:05d}", transform, rng)
        rows[b]["image"] = copy.relative_to(folder).as_posix()
        truth[b + 1] = (p + 1, transform)  # manifest rows count from 1
    out = folder / "benchmark.jsonl"
    out.write_text("".join(json.dumps({**r, "dataset": f"medsynth-{r['modality']}"}) + "\n" for r in rows))
    return out, truth


def score(report, truth: dict, max_distance: float) -> dict:
    """Recall on the planted rows (their source found within ``max_distance``) and false matches (any other pair)."""
    planted = {(b, p) for b, (p, _) in truth.items()}
    found = {(p.benchmark_row, p.pretrain_row) for p in report.pairs if p.distance is not None and p.distance <= max_distance}
    per_transform = {t: [(b, p) in found for b, (p, tt) in truth.items() if tt == t] for t in TRANSFORMS}
    return {"max_distance": max_distance, "recall": round(len(found & planted) / len(planted), 4),
            "recall_per_transform": {t: round(float(np.mean(v)), 4) for t, v in per_transform.items()},
            "false_matches": len(found - planted)}


def real_volume() -> dict:
    """Distances between the slices of nibabel's example4d.nii.gz (first volume, EPI, 2.2 mm slices)."""
    import nibabel
    from nibabel.testing import data_path

    path = Path(data_path) / "example4d.nii.gz"
    slices = [hash_image(path, z) for z in range(nibabel.load(path).shape[2])]
    d = np.array([[np.linalg.norm(a.descriptor.astype(np.float32) - b.descriptor.astype(np.float32))
                   for b in slices] for a in slices])
    adjacent = np.diag(d, 1)
    np.fill_diagonal(d, np.inf)
    return {"file": "nibabel example4d.nii.gz", "slices": len(slices), "adjacent_min": round(float(adjacent.min()), 4),
            "adjacent_median": round(float(np.median(adjacent)), 4), "pairs_within_max_distance": int((d <= MAX_DISTANCE).sum() // 2),
            "slice_shape": list(load_image(path, 0).shape)}


def timed(pretrain: Path, bench: Path, rows: int, **thresholds):
    """The report and {seconds, cpu_seconds, rows_per_s} of one run (wall clock; CPU time of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    report = find_leaks([pretrain], [bench], progress=False, **thresholds)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return report, {"seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "rows_per_s": round(rows / wall)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain", type=int, default=100_000)
    parser.add_argument("--benchmark", type=int, default=10_000)
    parser.add_argument("--planted", type=int, default=1000)
    parser.add_argument("--dir", default="/tmp/medmoe-leakage", help="where MedSynth is generated and kept")
    args = parser.parse_args()
    root = Path(args.dir)
    pretrain, pretrain_s = medsynth(root / "pretrain", args.pretrain, seed=0)
    _, bench_s = medsynth(root / "benchmark", args.benchmark, seed=1)
    bench, truth = benchmark_manifest(root / "benchmark", pretrain, args.planted, seed=2)
    for manifest in (pretrain, bench):
        manifest.with_name(manifest.name + CACHE_SUFFIX).unlink(missing_ok=True)
    rows = args.pretrain + args.benchmark
    cold, cold_time = timed(pretrain, bench, rows)
    warm, warm_time = timed(pretrain, bench, rows)
    loose, _ = timed(pretrain, bench, rows, max_distance=LOOSE_DISTANCE)
    planted = {(b, p) for b, (p, _) in truth.items()}
    found = {(q.benchmark_row, q.pretrain_row): q for q in loose.pairs}
    missed = [b for b, p in planted if (b, p) not in found]
    others = [q.distance for key, q in found.items() if key not in planted]
    print(json.dumps({
        "command": f"medmoe data leakage {pretrain} --against {bench}",
        "pretrain_rows": args.pretrain, "benchmark_rows": args.benchmark, "planted": args.planted,
        "generation_seconds": round(pretrain_s + bench_s, 1),
        "cold": {**cold_time, **cold.checked},
        "warm": {**warm_time, "hashed": warm.checked["hashed"]},
        "thresholds": {"max_hamming": MAX_HAMMING, "max_distance": MAX_DISTANCE},
        "verdict": cold.verdict, "per_dataset": cold.per_dataset,
        "at_default": score(cold, truth, MAX_DISTANCE),
        "sweep": [score(loose, truth, d) for d in (0.01, 0.015, 0.02, 0.025, LOOSE_DISTANCE)],
        "planted_missed_at_loose": {"rows": len(missed), "transforms": sorted({truth[b][1] for b in missed})},
        "planted_found": {"pHash_bits_max": max((found[k].hamming for k in planted if k in found), default=None),
                          "distance_max": max((found[k].distance for k in planted if k in found), default=None)},
        "closest_other_pair_distance": min(others, default=None),
        "real_volume": real_volume()}, indent=1))


if __name__ == "__main__":
    main()
