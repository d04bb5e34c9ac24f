"""Image decoding throughput (PNG, DICOM, NIfTI -> model input) and the trainer's data-wait share.

    PYTHONPATH=src python benchmarks/loader.py [--run runs/demo/run] [--n 300]

Decoding: ``load_image`` + ``to_model_input`` at 96 px on one process, for MedSynth PNGs, pydicom's
CT_small.dcm / MR_small_jp2klossless.dcm and nibabel's example4d.nii.gz. Data wait: the last
``data_wait`` (time waiting for the next batch / total step time) that the trainer logged in
RUN/metrics.jsonl; without --run, a 30-step `small` training on fresh MedSynth is run to measure it.
Prints one JSON object.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel
import pydicom.data

from medmoe.data.io import load_image
from medmoe.data.synth import generate
from medmoe.data.transforms import to_model_input


def images_per_s(paths, n):
    start = time.perf_counter()
    for i in range(n):
        to_model_input(load_image(paths[i % len(paths)]), 96)
    return round(n / (time.perf_counter() - start), 1)


def demo_data_wait(run: Path) -> float:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("split") == "train"][-1]["data_wait"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished training run (e.g. the demo's runs/demo/run)")
    parser.add_argument("--n", type=int, default=300, help="decodes per format")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate(Path(tmp) / "synth", n=600, seed=0, size=96, progress=False)
        pngs = sorted((manifest.parent / "images").glob("*.png"))
        nifti = Path(nibabel.__file__).parent / "tests" / "data" / "example4d.nii.gz"
        result = {
            "png_images_per_s": images_per_s(pngs, args.n),
            "dicom_ct_images_per_s": images_per_s([pydicom.data.get_testdata_file("CT_small.dcm")], args.n),
            "dicom_jpeg2000_images_per_s": images_per_s(
                [pydicom.data.get_testdata_file("MR_small_jp2klossless.dcm")], args.n),
            "nifti_gz_images_per_s": images_per_s([nifti], max(20, args.n // 10)),
        }
        run = args.run
        if run is None:
            from medmoe.config import load_config
            from medmoe.train.loop import TrainArgs, train

            run = Path(tmp) / "run"
            train(load_config("small"), TrainArgs(data=str(manifest), out=str(run), steps=30, eval_every=1000,
                                                  checkpoint_every=1000, progress=False))
        result["trainer_data_wait"] = demo_data_wait(run)
        result["data_wait_source"] = str(args.run) if args.run else "30-step small run"
        result["goal_data_wait_under_0.10"] = result["trainer_data_wait"] < 0.10
    print(json.dumps(result))


if __name__ == "__main__":
    main()
