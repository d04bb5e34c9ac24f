"""Modality labeller: throughput (rows/s) and accuracy, text only and with ``--images``, on MedSynth.

    PYTHONPATH=src python benchmarks/labeller.py --data /tmp/medsynth10k [--n 10000] [--strip 0.4]

DATA is a MedSynth folder (``medmoe synth DATA --n 10000``; made here when missing). A fraction
``--strip`` of the reports loses every sentence holding a cue that names the modality outright
(weight 5 in modality_rules.json: "CT", "MRI", "radiograph", "ultrasound"...), so those rows must be
labelled from weaker cues or from the image. Right/wrong/unknown are against MedSynth's true
modality. Prints one JSON object.
"""
import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

from medmoe.data.labelling import ModalityRules, label_manifest
from medmoe.data.synth import generate


def stripped_manifest(data: Path, n: int, strip: float, rules: ModalityRules, out: Path) -> tuple[list[str], float]:
    """Write the (partly stripped) manifest; return the true modalities and the stripped share."""
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()][:n]
    naming = [re.compile(p, re.IGNORECASE) for cues in rules.cues.values() for p, w in cues.items() if w >= 5]
    rng, stripped = random.Random(0), 0
    with open(out, "w") as f:
        for row in rows:
            report = row["report"]
            if rng.random() < strip:
                sentences = re.split(r"(?<=[.!?])\s+", report)
                report = " ".join(s for s in sentences if not any(p.search(s) for p in naming)) or "No abnormality."
                stripped += 1
            f.write(json.dumps({"image": str((data / row["image"]).resolve()), "report": report}) + "\n")
    return [row["modality"] for row in rows], stripped / len(rows)


def score(out: Path, truth: list[str]) -> dict:
    got = [json.loads(line)["modality"] for line in out.read_text().splitlines()]
    n = len(truth)
    return {"right": round(sum(g == t for g, t in zip(got, truth)) / n, 4),
            "wrong": round(sum(bool(g) and g != t for g, t in zip(got, truth)) / n, 4),
            "unknown": round(sum(not g for g in got) / n, 4)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--strip", type=float, default=0.4)
    args = parser.parse_args()
    if not (args.data / "manifest.jsonl").is_file():
        generate(args.data, n=args.n, seed=3, progress=False)
    rules = ModalityRules.load()
    tmp = Path(tempfile.mkdtemp())
    truth, stripped = stripped_manifest(args.data, args.n, args.strip, rules, tmp / "in.jsonl")
    result = {"rows": len(truth), "stripped_fraction": round(stripped, 3)}
    for name, images in (("text", False), ("images", True)):
        start = time.perf_counter()
        summary = label_manifest(tmp / "in.jsonl", tmp / f"{name}.jsonl", rules, images=images)
        seconds = time.perf_counter() - start
        result[name] = {"seconds": round(seconds, 1), "rows_per_s": round(len(truth) / seconds, 1),
                        **score(tmp / f"{name}.jsonl", truth), "modality_source": summary["modality_source"]}
        if images:
            result[name].update(cv_accuracy=summary["image_classifier"].get("cv_accuracy"),
                                disagreements=len(summary["disagreements"]),
                                overridden=sum(d["overridden"] for d in summary["disagreements"]))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
