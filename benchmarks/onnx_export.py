"""onnxruntime (CPU) against PyTorch (CPU) for the exported encoders: images/s and reports/s, and
the largest difference of the outputs. The exported image graph runs every expert (see
``medmoe/export.py``); PyTorch runs the routed one only, so the image ratio includes that cost.

    PYTHONPATH=src python benchmarks/onnx_export.py [--preset small] [--batch 16] [--repeats 5] [--threads 2]

Prints one JSON object. Random-init weights (speed does not depend on them).
"""
import argparse
import json
import tempfile
import time

import numpy as np
import torch

from medmoe.config import load_config
from medmoe.export import OnnxImageEncoder, OnnxTextEncoder, export_onnx
from medmoe.model.medmoe import MedMoE

from inference import median_seconds  # benchmarks/inference.py, beside this script

REPORTS = ["Frontal chest radiograph. Moderate left pleural effusion. No pneumothorax. Heart size is normal.",
           "Axial CT of the abdomen: a 2 cm hypodense lesion in the right hepatic lobe, likely a cyst."]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MedMoE(load_config(args.preset, text_pretrained=False)).eval()
    size = model.config.image_size
    images = torch.randn(args.batch, 3, size, size)
    reports = (REPORTS * args.batch)[: args.batch]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        export_onnx(model, out)
        export_s = time.perf_counter() - start
        image_onnx, text_onnx = OnnxImageEncoder(out, args.threads), OnnxTextEncoder(out, args.threads)
        with torch.inference_mode():
            torch_image = median_seconds(lambda: model.encode_image(images), args.repeats)
            torch_text = median_seconds(lambda: model.encode_text(reports), args.repeats)
            ref_image, ref_text = model.encode_image(images), model.encode_text(reports)
        ort_image = median_seconds(lambda: image_onnx(images.numpy()), args.repeats)
        ort_text = median_seconds(lambda: text_onnx(reports), args.repeats)
        global_emb, local_map, _ = image_onnx(images.numpy())
        text_global, words, _ = text_onnx(reports)
    diff = max(np.abs(global_emb - ref_image.global_emb.numpy()).max(), np.abs(local_map - ref_image.local_map.numpy()).max(),
               np.abs(text_global - ref_text.global_emb.numpy()).max(), np.abs(words - ref_text.words.numpy()).max())
    result = {
        "preset": args.preset, "batch": args.batch, "threads": args.threads, "export_s": round(export_s, 1),
        "torch_images_per_s": round(args.batch / torch_image, 2), "onnx_images_per_s": round(args.batch / ort_image, 2),
        "torch_reports_per_s": round(args.batch / torch_text, 2), "onnx_reports_per_s": round(args.batch / ort_text, 2),
        "max_abs_difference": float(diff),
    }
    result["image_onnx_vs_torch"] = round(torch_image / ort_image, 3)
    result["text_onnx_vs_torch"] = round(torch_text / ort_text, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
