"""``medmoe synth`` and ``medmoe data check | shard | prepare | label-modality | leakage``: data in, manifests out."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ConfigError, DataError, ManifestError
from .common import add_json, add_out, out_of, write_json


def _synth_mix(text: str) -> dict[str, float]:
    """--mix 'xray=0.6,ct=0.4' -> {"xray": 0.6, "ct": 0.4}, checked as the generator checks it."""
    from ..data.synth import mix_cdf

    mix = {}
    for part in text.split(","):
        name, _, weight = (s.strip() for s in part.partition("="))
        if name in mix:
            raise ConfigError(f"--mix: {name} is given twice")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise ConfigError(f"--mix: expected MODALITY=WEIGHT[,MODALITY=WEIGHT...], got {part!r}") from None
    try:
        mix_cdf(mix)
    except ValueError as exc:
        raise ConfigError(f"--mix: {exc}") from None
    return mix


def cmd_synth(args) -> int:
    import dataclasses

    from ..data.synth import Difficulty, generate

    out = out_of(args, "medmoe synth")
    knobs = {"noise": args.noise, "contrast": args.contrast, "lesion_scale": args.lesion_scale}
    try:
        difficulty = dataclasses.replace(Difficulty(), **{k: v for k, v in knobs.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.n < 1 or args.size < 32:
        raise ConfigError("--n must be >= 1 and --size >= 32")
    mix = None if args.mix is None else _synth_mix(args.mix)
    manifest = generate(out, n=args.n, seed=args.seed, size=args.size, difficulty=difficulty,
                        progress=not args.quiet, mix=mix, sanity=args.sanity)
    print(f"wrote {args.n} MedSynth images{' (grounding sanity set)' if args.sanity else ''} and {manifest}")
    return 0


def cmd_check(args) -> int:
    from ..data.manifest import read_manifest

    manifest = read_manifest(args.manifest, decode=True)
    summary = manifest.summary()
    print(f"{args.manifest}: {summary['rows']} rows, {summary['usable']} usable")
    for modality, count in summary["per_modality"].items():
        print(f"  {modality:<12} {count}")
    for bad in summary["unusable"]:
        print(f"  row {bad['row']}: {bad['reason']}")
    write_json(args.json, summary)
    if not manifest.rows:
        raise ManifestError(f"{args.manifest}: no usable row")
    return 0


def cmd_shard(args) -> int:
    from ..data.shards import write_shards

    out = out_of(args, "medmoe data shard")
    summary = write_shards(args.manifest, out, args.shard_size, split=args.split, progress=not args.quiet,
                           max_side=args.max_side, quality=args.quality, workers=args.workers)
    last = len(summary["shards"]) - 1
    print(f"wrote {len(summary['shards'])} shards, {summary['samples']} samples ({len(summary['skipped'])} skipped "
          f"rows) and shards.json to {out}")
    for bad in summary["skipped"]:
        print(f"  row {bad['row']}: {bad['reason']}")
    print(f"train with: medmoe train --data '{Path(out)}/{{000000..{last:06d}}}.tar' ...")
    return 0


def cmd_prepare(args) -> int:
    from ..data.prepare import prepare

    options = {k: v for k, v in {"list_file": args.list, "plane": args.plane, "slice_index": args.slice}.items()
               if v is not None}
    if options:
        from ..data.benchmarks import DATASETS

        if args.dataset not in DATASETS:
            raise ConfigError(f"--list, --plane and --slice apply to the benchmark datasets ({', '.join(DATASETS)})")
    summary = prepare(args.dataset, args.root, args.out, seed=args.seed, **options)
    for warning in summary.get("warnings", []):
        print(f"medmoe: warning: {warning}", file=sys.stderr)
    print(f"{args.dataset}: {summary['rows']} rows -> {args.out}")
    for key in ("per_split", "per_modality", "skipped"):
        print(f"  {key.replace('per_', '')}: " + (", ".join(f"{k} {v}" for k, v in summary[key].items()) or "none"))
    write_json(args.json, summary)
    return 0


def cmd_label_modality(args) -> int:
    from ..data.labelling import ModalityRules, label_manifest

    if args.command == "label-modality":
        print("medmoe: warning: 'medmoe label-modality' is deprecated, use 'medmoe data label-modality'",
              file=sys.stderr)
    counts = label_manifest(args.manifest, args.out, ModalityRules.load(args.rules), overwrite=args.overwrite,
                            images=args.images, fill_probability=args.fill_probability,
                            override_probability=args.override_probability)
    print(f"{args.manifest}: {counts['rows']} rows -> {args.out}")
    for modality, count in counts["per_modality"].items():
        print(f"  {modality:<12} {count}")
    print(f"given {counts['given']}, filled from the report {counts['from_report']}, unknown {counts['unknown']}"
          + (f", unparseable (copied as is) {counts['unparseable']}" if counts["unparseable"] else ""))
    if args.images:
        sources, classifier = counts["modality_source"], counts["image_classifier"]
        print(f"with images: from DICOM tags {sources['dicom']}, from the image {sources['image']}, "
              f"text contradicted by the image {len(counts['disagreements'])} "
              f"(overridden {sum(d['overridden'] for d in counts['disagreements'])})")
        print(f"image classifier: out-of-fold accuracy {classifier['cv_accuracy']} on {sum(classifier['trained_on'].values())} "
              "labelled rows" if classifier["trained"] else f"image classifier not trained: {classifier['reason']}")
    write_json(args.json, counts)
    return 0


LEAKS_SHOWN = 20  # pairs and skipped rows printed; --json holds them all


def cmd_leakage(args) -> int:
    from ..data.leakage import find_leaks

    try:
        report = find_leaks(args.pretrain, args.against, max_hamming=args.max_hamming, max_distance=args.max_distance,
                            progress=not args.quiet)
    except DataError as exc:  # status 2, not the data errors' 1: here 1 means "leaks found"
        raise ConfigError(str(exc)) from None
    for warning in report.warnings:
        print(f"medmoe: warning: {warning}", file=sys.stderr)
    columns = ("rows", "skipped", "leaked", "exact", "near", "patient", "study")
    print(f"{'dataset':<24}" + "".join(f"{c:>9}" for c in columns))
    for name, counts in report.per_dataset.items():
        print(f"{name:<24}" + "".join(f"{counts[c]:>9}" for c in columns))
    for p in report.pairs[:LEAKS_SHOWN]:
        measured = f" (pHash {p.hamming} bits, distance {p.distance})" if p.distance is not None else ""
        print(f"  {p.dataset}: {p.benchmark} row {p.benchmark_row} ({p.benchmark_image}) ~ {p.pretrain} row "
              f"{p.pretrain_row} ({p.pretrain_image}): {', '.join(p.kinds)}{measured}")
    for bad in report.skipped[:LEAKS_SHOWN]:
        print(f"  skipped {bad['manifest']} row {bad['row']}: {bad['reason']}")
    hidden = max(len(report.pairs) - LEAKS_SHOWN, 0) + max(len(report.skipped) - LEAKS_SHOWN, 0)
    if hidden:
        print(f"  ... {hidden} more lines" + (f" in {args.json}" if args.json else " (--json FILE lists them all)"))
    checked = report.checked
    print(f"{checked['benchmark_images']} benchmark x {checked['pretrain_images']} pretraining images "
          f"({checked['hashed']} hashed, {checked['cached']} from the caches): the pHash index proposed "
          f"{checked['pairs_proposed']} comparisons, {checked['pairs_compared']} pairs within {args.max_hamming} bits "
          f"compared on their DCT coefficients")
    write_json(args.json, report.to_dict())
    print(report.verdict)
    return 1 if report.leaked else 0


def _prepare_epilog() -> str:
    from ..data.prepare import dataset_layouts

    return "expected layout under --root:\n" + "\n".join(f"  {name}: {layout}" for name, layout in dataset_layouts().items())


def _label_modality_parser(sub, name: str, help: str) -> None:
    from ..data.labelling import FILL_PROBABILITY, OVERRIDE_PROBABILITY

    p = sub.add_parser(name, help=help,
                       description="Write FILE: every row of MANIFEST with 'modality' filled from its report where it "
                       "is missing (weighted cue rules, see medmoe/data/modality_rules.json; left empty when the report "
                       "is undecided) and 'modality_source' (given, dicom, report, image or unknown). Images are read "
                       "only with --images.")
    p.add_argument("manifest", help="JSONL or CSV manifest")
    p.add_argument("--out", required=True, metavar="FILE", help="output manifest (.jsonl, .json or .csv); relative "
                   "image/mask paths are rewritten if it is in another folder")
    p.add_argument("--rules", action="append", default=[], metavar="FILE",
                   help="JSON rules extending/overriding the built-in ones (repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="label rows that already have a modality too (an undecided report keeps the given one)")
    p.add_argument("--images", action="store_true",
                   help="also read the images: DICOM Modality tags, then a small image classifier trained on the rows "
                   "labelled so far labels the rows still unknown and questions the text (disagreements in --json)")
    p.add_argument("--fill-probability", type=float, default=FILL_PROBABILITY, metavar="P",
                   help=f"with --images, label an unknown row from its image at this probability or more "
                   f"(default: {FILL_PROBABILITY})")
    p.add_argument("--override-probability", type=float, default=OVERRIDE_PROBABILITY, metavar="P",
                   help=f"with --images, replace a text label the image contradicts at this probability or more "
                   f"(default: {OVERRIDE_PROBABILITY})")
    add_json(p, 'write the counts (and, with --images, "image_classifier" and "disagreements": row, text label, '
             'image label, probability) as JSON')
    p.set_defaults(func=cmd_label_modality)


def _leakage_parser(sub) -> None:
    from ..data.leakage import MAX_DISTANCE, MAX_HAMMING

    p = sub.add_parser("leakage", help="find the pretraining rows that hold a benchmark row's image or patient",
                       description="Find the rows of the PRETRAIN manifests that are the same image as a row of the "
                       "--against manifests (the same decoded pixels, or a resized, re-encoded, 8/16-bit or "
                       "DICOM-exported copy: pHash candidates from a multi-index hash, confirmed on low-frequency DCT "
                       "coefficients) or share its patient/subject_id or study_id within one dataset. Hashes are "
                       "cached beside each manifest (MANIFEST.leakage.npz). Exit status: 0 clean, 1 leaks found, "
                       "2 the check could not run.")
    p.add_argument("pretrain", nargs="+", metavar="PRETRAIN", help="pretraining manifests (JSONL or CSV)")
    p.add_argument("--against", nargs="+", required=True, metavar="BENCH", help="benchmark manifests; counts are "
                   "per 'dataset' column value, else per manifest file name")
    p.add_argument("--max-hamming", type=int, default=MAX_HAMMING, metavar="BITS",
                   help=f"pHash bits (of 64) within which images are compared (default: {MAX_HAMMING})")
    p.add_argument("--max-distance", type=float, default=MAX_DISTANCE, metavar="D",
                   help=f"distance of the DCT descriptors of a near duplicate (default: {MAX_DISTANCE})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json(p, "write the report (verdict, per_dataset, pairs, skipped, checked) as JSON")
    p.set_defaults(func=cmd_leakage)


def register(sub) -> None:
    p = sub.add_parser("synth", help="generate the built-in MedSynth dataset",
                       description="Write MedSynth images (PNG), finding masks and manifest.jsonl to --out.")
    add_out(p, "DIR", "output folder", legacy_positional=True)
    p.add_argument("--n", type=int, default=2000, help="number of images (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default: 96)")
    p.add_argument("--noise", type=float, help="noise scale (default: the generator's)")
    p.add_argument("--contrast", type=float, help="lesion contrast scale (default: the generator's)")
    p.add_argument("--lesion-scale", type=float, help="lesion size scale (default: the generator's)")
    p.add_argument("--mix", metavar="MODALITY=WEIGHT,...", help="modality mix, e.g. "
                   "xray=0.6,ct=0.25,mri=0.1,ultrasound=0.05; weights are normalised (default: uniform)")
    p.add_argument("--sanity", action="store_true", help="the grounding sanity set: every image has a finding, on "
                   "one fixed background per modality, and its report is the finding sentence alone")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("data", help="check, shard, prepare and label manifests; check them for leakage",
                       description="Check, shard, prepare and label manifests; find benchmark images in "
                       "pretraining data.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("check", help="read every row and image of a manifest and summarise",
                            description="Read every row of MANIFEST (decoding each image) and print rows, usable "
                            "rows, per-modality counts and each unusable row with its reason. Exit 1 if none is usable.")
    q.add_argument("manifest")
    add_json(q, 'write {"rows", "usable", "per_modality", "unusable"} as JSON')
    q.set_defaults(func=cmd_check)
    q = data_sub.add_parser("shard", help="write a manifest's usable rows as webdataset tar shards",
                            description="Write OUT/000000.tar, ... (image file bytes as they are, report, metadata) "
                            "and OUT/shards.json, for medmoe train --data 'OUT/{000000..00000K}.tar'.")
    q.add_argument("manifest")
    add_out(q, "DIR", "output folder (new, or one this command wrote: it resumes, writing the missing shards)",
            legacy_positional=True)
    q.add_argument("--shard-size", type=int, required=True, metavar="N", help="samples per shard (at most)")
    q.add_argument("--split", metavar="NAME", help="only this split's rows (default: all rows)")
    q.add_argument("--max-side", type=int, metavar="PIXELS", help="store each image decoded and resized to this "
                   "longer side (never enlarged): a JPEG for a JPEG source, else a PNG (16-bit for DICOM, NIfTI and "
                   "other deep grey sources), so training never decodes a full-size file again (default: the source "
                   "files' bytes as they are)")
    q.add_argument("--quality", type=int, default=90, help="JPEG quality with --max-side (default: 90)")
    q.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1),
                   help="processes writing shards side by side (default: one per CPU)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_shard)
    q = data_sub.add_parser("prepare", help="write the manifest of a dataset as its publisher ships it",
                            description="Read DATASET under --root exactly as its publisher distributes it and write "
                            "MANIFEST (image, report, modality where the source states it, split, dataset). Rows "
                            "without an image file or with an empty report are skipped and counted.",
                            epilog=_prepare_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("dataset", metavar="DATASET")
    q.add_argument("--root", required=True, metavar="DIR", help="the dataset's folder, as downloaded and unpacked")
    add_out(q, "MANIFEST", "output manifest (.jsonl)")
    q.add_argument("--seed", type=int, default=0, help="seed of the split where the source has none (default: 0)")
    q.add_argument("--list", metavar="FILE", help="benchmarks: a fixed list; the chexpert-5x200 selection "
                   "(UniMed-CLIP's chexpert-5x200.csv) or the test split of rsna-pneumonia, thyroid-us, breast-us and "
                   "mrnet-* (RadImageNet's/UniMed-CLIP's fold-1 test CSVs)")
    q.add_argument("--plane", choices=("axial", "coronal", "sagittal"), help="mrnet-*: the plane (default: sagittal)")
    q.add_argument("--slice", type=int, metavar="N", help="mrnet-*: the slice index (default: each exam's middle slice)")
    add_json(q, "also write the summary as JSON")
    q.set_defaults(func=cmd_prepare)
    _leakage_parser(data_sub)
    _label_modality_parser(data_sub, "label-modality", "fill missing modality labels of a manifest from its reports "
                           "(and images)")
    _label_modality_parser(sub, "label-modality", "deprecated: medmoe data label-modality")
