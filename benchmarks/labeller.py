"""Modality labeller: right/wrong/unknown rates of ``label-modality``, on the hand-written corpus and on MedSynth.

    PYTHONPATH=src python benchmarks/labeller.py corpus [--split heldout]
    PYTHONPATH=src python benchmarks/labeller.py medsynth --data /tmp/medsynth10k [--n 10000] [--strip 0.4] [--degrade]
                                                          [--captions heldout]

``corpus``: the text rules on ``tests/data/modality_corpus.jsonl`` (see tests/data/README.md), per group:
chest radiograph reports, mixed captions and notes, those of them never naming their modality, those
written for issue 9 and those written for issue 15's failure kinds, and each kind (``trap``).

``medsynth``: DATA is a MedSynth folder (``medmoe synth DATA --n 10000 --seed 3``; made here when
missing). A fraction ``--strip`` of the reports loses every sentence holding a cue that names the
modality outright (weight 5 in modality_rules.json: "CT", "MRI", "radiograph", "ultrasound"...), so
those rows must be labelled from weaker cues or from the image. ``--degrade`` first rewrites every
image as a figure might show it (seeded per row): a random crop of 55-100 % of each side, a flip,
gamma and window, blur, noise, annotation marks, a border and a size of 80-256 px, so that the image
classifier is no longer near-perfect. ``--captions SPLIT`` puts the corpus's texts of that split
in place of the reports of as many MedSynth rows of the same modality (the first unused ones), so
that the hand-written texts are measured with images too (on pictures of their modality, not of
their anatomy); their rates are given per corpus group. Right/wrong/unknown are against MedSynth's
true modality, text only and with ``--images``. Prints one JSON object.
"""
import argparse
import json
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from medmoe.data.labelling import ModalityRules, label_manifest
from medmoe.data.synth import generate

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "modality_corpus.jsonl"


def rates(truth: list[str], got: list[str | None]) -> dict:
    n = len(truth)
    return {"n": n, "right": round(sum(g == t for g, t in zip(got, truth)) / n, 4),
            "wrong": round(sum(bool(g) and g != t for g, t in zip(got, truth)) / n, 4),
            "unknown": round(sum(not g for g in got) / n, 4)}


def corpus_groups(split: str) -> dict[str, list[dict]]:
    """The corpus's texts of ``split`` by group (module docstring)."""
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["split"] == split]
    mixed = [r for r in rows if r["corpus"] == "mixed"]
    groups = {"chest": [r for r in rows if r["corpus"] == "chest"], "mixed": mixed,
              "mixed, never naming the modality": [r for r in mixed if not r["names_modality"]],
              "mixed, issue 9's texts": [r for r in mixed if "trap" not in r],
              "mixed, issue 15's texts (failure kinds)": [r for r in mixed if "trap" in r]}
    for kind in sorted({r["trap"] for r in rows if "trap" in r}):
        groups[f"trap: {kind}"] = [r for r in rows if r.get("trap") == kind]
    return groups


def corpus_rates(rules: ModalityRules, split: str) -> dict:
    return {name: rates([r["modality"] for r in group], [rules.label_report(r["text"])[0] for r in group])
            for name, group in corpus_groups(split).items()}


def degrade(source: Path, out: Path, key: int) -> None:
    """Write ``source`` as a figure might show it (module docstring), seeded by ``key``."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng([7, key])
    image = Image.open(source).convert("L")
    w, h = image.size
    cw, ch = (int(s * rng.uniform(0.55, 1.0)) for s in (w, h))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = image.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.2)))
    side = int(rng.integers(80, 257))
    image = image.resize((side, int(side * rng.uniform(0.75, 1.33))), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255
    lo, hi = rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)
    pixels = np.clip((pixels - lo) / (hi - lo), 0, 1) ** rng.uniform(0.6, 1.6)
    pixels = np.clip(pixels + rng.normal(0, rng.uniform(0, 0.06), pixels.shape), 0, 1)
    image = Image.fromarray((pixels * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):  # arrows, letters, scale bars
        x, y = rng.uniform(0, image.width), rng.uniform(0, image.height)
        dx, dy = rng.uniform(-0.15, 0.15, 2) * image.width
        draw.line((x, y, x + dx, y + dy), fill=int(rng.choice([0, 255])), width=int(rng.integers(1, 4)))
    border = int(rng.integers(0, max(1, image.width // 10)))
    framed = Image.new("L", (image.width + 2 * border, image.height + 2 * border), 0)
    framed.paste(image, (border, border))
    framed.save(out)


def stripped_manifest(data: Path, n: int, strip: float, rules: ModalityRules, out: Path,
                      degraded: Path | None, captions: dict[int, str]) -> tuple[list[str], float]:
    """Write the (partly stripped) manifest, images degraded into ``degraded`` if given and row i's
    report replaced by ``captions[i]``; return the true modalities and the stripped share."""
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()][:n]
    naming = [re.compile(p, re.IGNORECASE) for cues in rules.cues.values() for p, w in cues.items() if w >= 5]
    rng, stripped = random.Random(0), 0
    with open(out, "w") as f:
        for i, row in enumerate(rows):
            report = row["report"]
            if i in captions:
                report = captions[i]
            elif rng.random() < strip:
                sentences = re.split(r"(?<=[.!?])\s+", report)
                report = " ".join(s for s in sentences if not any(p.search(s) for p in naming)) or "No abnormality."
                stripped += 1
            image = (data / row["image"]).resolve()
            if degraded is not None:
                degrade(image, degraded / f"{i:06d}.png", i)
                image = degraded / f"{i:06d}.png"
            f.write(json.dumps({"image": str(image), "report": report}) + "\n")
    return [row["modality"] for row in rows], stripped / len(rows)


def medsynth(args) -> dict:
    if not (args.data / "manifest.jsonl").is_file():
        generate(args.data, n=args.n, seed=3, progress=False)
    rules = ModalityRules.load()
    tmp = Path(tempfile.mkdtemp())
    degraded = tmp / "degraded" if args.degrade else None
    if degraded is not None:
        degraded.mkdir()
    modalities = [json.loads(line)["modality"] for line in (args.data / "manifest.jsonl").read_text().splitlines()]
    free = {m: iter([i for i, x in enumerate(modalities[:args.n]) if x == m]) for m in set(modalities)}
    groups = corpus_groups(args.captions) if args.captions else {}
    texts = {id(r): r for group in groups.values() for r in group}  # a text is in several groups
    place = {key: next(free[r["modality"]], None) for key, r in texts.items()}
    if None in place.values():
        raise SystemExit(f"--captions {args.captions}: fewer MedSynth rows of some modality than texts; raise --n")
    captions = {place[key]: r["text"] for key, r in texts.items()}
    truth, stripped = stripped_manifest(args.data, args.n, args.strip, rules, tmp / "in.jsonl", degraded, captions)
    result = {"rows": len(truth), "stripped_fraction": round(stripped, 3), "degraded": args.degrade,
              "captions": len(captions)}
    for name, images in (("text", False), ("images", True)):
        start = time.perf_counter()
        summary = label_manifest(tmp / "in.jsonl", tmp / f"{name}.jsonl", rules, images=images)
        seconds = time.perf_counter() - start
        got = [json.loads(line)["modality"] for line in (tmp / f"{name}.jsonl").read_text().splitlines()]
        medsynth_rows = [i for i in range(len(truth)) if i not in captions]
        result[name] = {"seconds": round(seconds, 1), "rows_per_s": round(len(truth) / seconds, 1),
                        **rates([truth[i] for i in medsynth_rows], [got[i] for i in medsynth_rows]),
                        "modality_source": summary["modality_source"]}
        if groups:
            result[name]["captions"] = {group: rates([r["modality"] for r in rows], [got[place[id(r)]] for r in rows])
                                        for group, rows in groups.items()}
        if images:
            result[name].update(cv_accuracy=summary["image_classifier"].get("cv_accuracy"),
                                disagreements=len(summary["disagreements"]),
                                overridden=sum(d["overridden"] for d in summary["disagreements"]))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("corpus")
    p.add_argument("--split", choices=("heldout", "dev"), default="heldout")
    p = sub.add_parser("medsynth")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--strip", type=float, default=0.4)
    p.add_argument("--degrade", action="store_true")
    p.add_argument("--captions", choices=("heldout", "dev"))
    args = parser.parse_args()
    result = corpus_rates(ModalityRules.load(), args.split) if args.command == "corpus" else medsynth(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
