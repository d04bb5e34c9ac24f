"""Images per second per core that the input pipeline delivers at the paper's 224 px, and how many cores feed a GPU.

    PYTHONPATH=src python benchmarks/loader.py [--gpu-json OUT/gpu.json | --gpu-rate IMAGES_PER_S] [--n 40]

One process, one thread (a data worker), each path timed in the same run, interleaved (A B C A B C ...), median
of ``--repeats`` rounds:

- MIMIC-size JPEG (2,544 x 3,056, a radiograph-like picture at quality 95): Pillow's plain full decode + resize to
  224 on the shorter side (the reference), today's full-size ``load_image`` + model input, and the reduced decode
  the data pipeline uses (``ImageTransform.load(reduced=True)``: 1/8 in the DCT) + model input; the done-when
  ratio is reduced / plain >= 1.5;
- a 16-bit 3,000 x 3,000 DICOM (windowed) -> model input;
- shards written with ``medmoe data shard --max-side 256`` -> the training input (random crop, 224 px):
  what the trainer does per sample; the goal is >= 300 images/s per core.

Cores to feed a GPU: the training images/s of ``gpu.sh`` (``--gpu-json``: its gpu.json, MedMoE's training rate;
or ``--gpu-rate``) over each path's per-core rate. Prints one JSON object.
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medmoe.data.shards import decode_prepared, write_shards
from medmoe.data.transforms import ImageTransform

SIZE = 224


def radiograph(path: Path, height: int = 3056, width: int = 2544) -> Path:
    """A smooth radiograph-like picture with pixel noise, as a quality-95 JPEG of about 1.6 MB (MIMIC-CXR-JPG's
    files average 1.5 MB: 570 GB over 377,110 images); JPEG's entropy decoding, which no reduced decode skips,
    grows with the file."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:height, :width] / height
    picture = 0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y) - 0.2 * ((x - 0.42) ** 2 + (y - 0.5) ** 2)
    picture = np.clip(picture + 0.008 * rng.standard_normal((height, width)), 0, 1)
    Image.fromarray((picture * 255).astype(np.uint8)).save(path, quality=95)
    return path


def dicom16(path: Path, side: int = 3000) -> Path:
    """A 16-bit side x side MONOCHROME2 DICOM with a window (CT-like values)."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:side, :side] / side
    values = 1000 + 800 * np.sin(5 * x) * np.cos(3 * y) + 40 * rng.standard_normal((side, side))
    ds.Rows = ds.Columns = side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.clip(values, 0, 65535).astype(np.uint16).tobytes()
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.save_as(path)
    return path


def shard_samples(folder: Path, jpeg: Path, n: int) -> list[tuple[bytes, str]]:
    """``n`` prepared samples (bytes, kind) of a --max-side 256 shard of ``jpeg``."""
    import tarfile

    manifest = folder / "m.jsonl"
    manifest.write_text(json.dumps({"image": str(jpeg), "report": "A radiograph."}) + "\n")
    write_shards(manifest, folder / "shards", shard_size=10, progress=False, max_side=256)
    with tarfile.open(folder / "shards" / "000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    image = next(v for k, v in members.items() if k.endswith(".jpg"))
    meta = json.loads(next(v for k, v in members.items() if k.endswith(".json")))
    return [(image, meta["prepared"])] * n


def timed(paths: dict, repeats: int, n: int) -> dict[str, float]:
    """Images/s of each path, interleaved rounds, median."""
    rates = {name: [] for name in paths}
    for _ in range(repeats):
        for name, one in paths.items():
            one()  # warm
            start = time.perf_counter()
            for _ in range(n):
                one()
            rates[name].append(n / (time.perf_counter() - start))
    return {name: round(statistics.median(r), 1) for name, r in rates.items()}


def gpu_rate(args) -> float | None:
    if args.gpu_rate:
        return args.gpu_rate
    if args.gpu_json and Path(args.gpu_json).is_file():
        record = json.loads(Path(args.gpu_json).read_text())
        return record.get("medmoe", {}).get("train_images_per_s") or record.get("train_images_per_s")
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="decodes per path and round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-json", help="gpu.sh's gpu.json: MedMoE's training images/s")
    parser.add_argument("--gpu-rate", type=float, help="a GPU's training images/s, to size the data workers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    transform, generator = ImageTransform(SIZE), torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jpeg, dcm = radiograph(tmp / "cxr.jpg"), dicom16(tmp / "ct.dcm")
        jpeg_bytes = jpeg.stat().st_size
        samples = shard_samples(tmp, jpeg, 1)

        def plain():
            with Image.open(jpeg) as im:
                im = im.convert("L")
                scale = SIZE / min(im.size)
                im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)

        jpeg_paths = {"jpeg_pillow_full_decode_resize": plain,
                      "jpeg_full_decode_model_input": lambda: transform(transform.load(jpeg)),
                      "jpeg_reduced_decode_model_input": lambda: transform(transform.load(jpeg, reduced=True))}
        rates = timed(jpeg_paths, args.repeats, args.n)
        rates |= timed({"dicom16_3000_model_input": lambda: transform(transform.load(dcm, reduced=True))},
                       args.repeats, max(2, args.n // 4))
        rates |= timed({"shard256_training_input": lambda: transform.augment(
            decode_prepared(samples[0][0], samples[0][1], "gray"), generator)}, args.repeats, args.n * 10)
    result = {"jpeg_bytes": jpeg_bytes, "per_core_images_per_s": rates,
              "reduced_over_pillow_full": round(rates["jpeg_reduced_decode_model_input"]
                                                / rates["jpeg_pillow_full_decode_resize"], 2),
              "reduced_over_full": round(rates["jpeg_reduced_decode_model_input"]
                                         / rates["jpeg_full_decode_model_input"], 2)}
    rate = gpu_rate(args)
    if rate:
        result["gpu_train_images_per_s"] = rate
        result["cores_to_feed_the_gpu"] = {name: round(rate / r, 1) for name, r in rates.items()
                                           if name != "jpeg_pillow_full_decode_resize"}
    else:
        result["cores_per_1000_images_per_s"] = {name: round(1000 / r, 1) for name, r in rates.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
