"""The ``medmoe`` command. Each subcommand is a small function; heavy imports happen inside.

User errors (bad option, unknown preset, missing file) end with one ``medmoe: error:``
line and exit status 2, not a traceback; unusable data (no usable manifest row, an unreadable
image) and a failed training run exit with 1 (``medmoe/errors.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import registry
from .config import load_config, parse_overrides, variant_of
from .errors import ConfigError, DataError, ManifestError, TrainingError
from .options import add_options, given_options
from .train.args import TrainArgs
from .eval import DEFAULT_ENSEMBLE, DEFAULT_SCORING, ENSEMBLES, SCORINGS
from .data.labelling import FILL_PROBABILITY, OVERRIDE_PROBABILITY


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help=f"model preset: {', '.join(registry.names('presets'))} (default: tiny)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set num_experts=4 --set swin.embed_dim=32 (repeatable)")


def _add_recipe_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="default", choices=registry.names("recipes"),
                   help="training recipe (src/medmoe/recipes/): optimiser, schedule, clipping, epochs, loss weights, "
                   "temperatures and text settings; options and --set given here override it (default: default)")
    p.add_argument("--freeze-text", action="store_true", default=None,
                   help="keep the text encoder's weights fixed (--set freeze_text=true)")


def _config(args):
    given = {"freeze_text": True} if getattr(args, "freeze_text", None) else {}
    return load_config(args.preset, getattr(args, "variant", "medmoe"), getattr(args, "recipe", "default"),
                       **given, **parse_overrides(args.overrides))


def _write_json(path: str | None, payload: dict) -> None:
    if path:
        from .files import atomic_write_text

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def cmd_config(args) -> int:
    print(json.dumps(_config(args).to_dict(), indent=2))
    return 0


def cmd_flops(args) -> int:
    from .eval.flops import image_side_cost

    cost = image_side_cost(_config(args))
    print(f"image side of preset {args.preset!r}:")
    print(f"  parameters, all experts   {cost['params_total'] / 1e6:8.2f} M")
    print(f"  parameters, one expert    {cost['params_active'] / 1e6:8.2f} M")
    print(f"  GMACs, one expert active  {cost['gmacs_active']:8.3f}")
    print(f"  GMACs, all experts run    {cost['gmacs_all_experts']:8.3f}")
    _write_json(args.json, cost)
    return 0


def _synth_mix(text: str) -> dict[str, float]:
    """--mix 'xray=0.6,ct=0.4' -> {"xray": 0.6, "ct": 0.4}, checked as the generator checks it."""
    from .data.synth import mix_cdf

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

    from .data.synth import Difficulty, generate

    knobs = {"noise": args.noise, "contrast": args.contrast, "lesion_scale": args.lesion_scale}
    try:
        difficulty = dataclasses.replace(Difficulty(), **{k: v for k, v in knobs.items() if v is not None})
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.n < 1 or args.size < 32:
        raise ConfigError("--n must be >= 1 and --size >= 32")
    mix = None if args.mix is None else _synth_mix(args.mix)
    manifest = generate(args.out, n=args.n, seed=args.seed, size=args.size, difficulty=difficulty,
                        progress=not args.quiet, mix=mix)
    print(f"wrote {args.n} MedSynth images and {manifest}")
    return 0


def cmd_data_check(args) -> int:
    from .data.manifest import read_manifest

    manifest = read_manifest(args.manifest, decode=True)
    summary = manifest.summary()
    print(f"{args.manifest}: {summary['rows']} rows, {summary['usable']} usable")
    for modality, count in summary["per_modality"].items():
        print(f"  {modality:<12} {count}")
    for bad in summary["unusable"]:
        print(f"  row {bad['row']}: {bad['reason']}")
    _write_json(args.json, summary)
    if not manifest.rows:
        raise ManifestError(f"{args.manifest}: no usable row")
    return 0


def cmd_data_shard(args) -> int:
    from .data.shards import write_shards

    summary = write_shards(args.manifest, args.out, args.shard_size, split=args.split, progress=not args.quiet)
    last = len(summary["shards"]) - 1
    print(f"wrote {len(summary['shards'])} shards, {summary['samples']} samples ({len(summary['skipped'])} skipped "
          f"rows) and shards.json to {args.out}")
    for bad in summary["skipped"]:
        print(f"  row {bad['row']}: {bad['reason']}")
    print(f"train with: medmoe train --data '{Path(args.out)}/{{000000..{last:06d}}}.tar' ...")
    return 0


def cmd_data_prepare(args) -> int:
    from .data.prepare import prepare

    options = {k: v for k, v in {"list_file": args.list, "plane": args.plane, "slice_index": args.slice}.items()
               if v is not None}
    if options:
        from .data.benchmarks import DATASETS

        if args.dataset not in DATASETS:
            raise ConfigError(f"--list, --plane and --slice apply to the benchmark datasets ({', '.join(DATASETS)})")
    summary = prepare(args.dataset, args.root, args.out, seed=args.seed, **options)
    for warning in summary.get("warnings", []):
        print(f"medmoe: warning: {warning}", file=sys.stderr)
    print(f"{args.dataset}: {summary['rows']} rows -> {args.out}")
    for key in ("per_split", "per_modality", "skipped"):
        print(f"  {key.replace('per_', '')}: " + (", ".join(f"{k} {v}" for k, v in summary[key].items()) or "none"))
    _write_json(args.json, summary)
    return 0


def _prepare_epilog() -> str:
    from .data.prepare import dataset_layouts

    return "expected layout under --root:\n" + "\n".join(f"  {name}: {layout}" for name, layout in dataset_layouts().items())


def _benchmark_epilog() -> str:
    from .data.benchmarks import FOLDERS, layouts

    return "folders under --root, each holding what 'medmoe data prepare' reads (its --root):\n" + "\n".join(
        f"  {folder}/ -> {name}: {layouts()[name]}" for name, folder in FOLDERS.items())


def cmd_label_modality(args) -> int:
    from .data.labelling import ModalityRules, label_manifest

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
    _write_json(args.json, counts)
    return 0


def _train_args(args) -> TrainArgs:
    return TrainArgs.from_recipe(**given_options(args, TrainArgs))


def cmd_train(args) -> int:
    from .train.loop import train

    if args.resume and args.out is None:
        args.out = args.resume
    if args.data is None or args.out is None:
        raise ConfigError("train needs --data MANIFEST and --out RUN (or --resume RUN)")
    result = train(_config(args), _train_args(args))
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps(result))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo, synth_manifest

    configs = {v: _config(argparse.Namespace(**{**vars(args), "variant": v})) for v in args.variants}
    args.data, args.resume = str(synth_manifest(args.out)), None
    run_demo(configs, _train_args(args), n=args.n)
    return 0


def cmd_eval(args) -> int:
    from .eval.run import TASKS, evaluate, format_task
    from .model.medmoe import MedMoE

    model = MedMoE.from_pretrained(args.model)
    tasks = TASKS if args.task == "all" else (args.task,)
    result = {"model": str(args.model), "variant": variant_of(model.config),
              **evaluate(model, args.data, args.split, tasks, args.prompts, progress=not args.quiet,
                       scoring=args.scoring, ensemble=args.ensemble)}
    for name in (t.replace("-", "_") for t in tasks):
        print(f"\n{name} ({args.split} split, {result['n']} images)\n{format_task(name, result[name])}")
    if args.json:
        single = tasks[0].replace("-", "_")
        payload = result if args.task == "all" else {**result.pop(single), **result}
        _write_json(args.json, payload)
    return 0


def cmd_benchmark(args) -> int:
    from .eval.benchmark import benchmark, tables
    from .model.medmoe import MedMoE

    result = benchmark(MedMoE.from_pretrained(args.model), args.root, args.datasets, args.manifests, args.seed,
                       args.seeds, args.scoring, args.ensemble, progress=not args.quiet,
                       log=lambda line: print(f"medmoe: {line}", file=sys.stderr))
    text = tables(result)
    print(text)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text + "\n")
    _write_json(args.json, {"model": str(args.model), **result})
    return 0 if result["zeroshot"] or result["linear_probe"] else 1


def cmd_explain(args) -> int:
    from .eval.explain import explain
    from .model.medmoe import MedMoE

    out, expert = explain(MedMoE.from_pretrained(args.model), args.image, args.report, args.out,
                          title=Path(args.image).name)
    print(f"wrote {out}" + (f" (routed to expert {expert})" if expert is not None else ""))
    return 0


def cmd_classify(args) -> int:
    from .classify import PromptClassifier, read_prompts
    from .model.medmoe import load

    if not args.classes and not args.prompts:
        raise ConfigError("classify needs --classes NAME... or --prompts FILE")
    classes, templates = read_prompts(args.prompts, args.classes) if args.prompts else (args.classes, None)
    records = PromptClassifier(load(args.model), classes, templates).files(args.image)
    names = [str(c) for c in classes]
    width = max(12, *(len(Path(r["image"]).name) for r in records)) + 2
    print(f"{'image':<{width}}{'expert':<8}{'modality':<14}" + "".join(f"{n:>{max(8, len(n) + 2)}}" for n in names))
    for r in records:
        line = f"{Path(r['image']).name:<{width}}"
        if "error" in r:
            print(line + f"cannot be classified: {r['error']}")
            continue
        line += f"{'-' if r['expert'] is None else r['expert']:<8}{r['modality'] or '-':<14}"
        print(line + "".join(f"{r['probabilities'][n]:>{max(8, len(n) + 2)}.3f}" for n in names))
    _write_json(args.json, records)
    if not any("probabilities" in r for r in records):
        raise DataError(f"none of the {len(records)} images could be read")
    return 0


def cmd_app(args) -> int:
    from .app.server import serve
    from .model.medmoe import load

    serve(load(args.model), args.host, args.port)
    return 0


def cmd_export(args) -> int:
    from .export import export_onnx
    from .model.medmoe import load

    out = export_onnx(load(args.model), args.out)
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medmoe", description="MedMoE: modality-specialised mixture-of-experts "
                                     "vision-language pretraining for medical images.")
    parser.add_argument("--version", action="version", version=f"medmoe {__import__('medmoe').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="generate the built-in MedSynth dataset",
                       description="Write MedSynth images (PNG), finding masks and manifest.jsonl to OUT.")
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=2000, help="number of images (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=int, default=96, help="image side in pixels (default: 96)")
    p.add_argument("--noise", type=float, help="noise scale (default: the generator's)")
    p.add_argument("--contrast", type=float, help="lesion contrast scale (default: the generator's)")
    p.add_argument("--lesion-scale", type=float, help="lesion size scale (default: the generator's)")
    p.add_argument("--mix", metavar="MODALITY=WEIGHT,...", help="modality mix, e.g. "
                   "xray=0.6,ct=0.25,mri=0.1,ultrasound=0.05; weights are normalised (default: uniform)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("flops", help="parameters and multiply-adds of the image side (paper Table 3)",
                       description="Count parameters and GMACs of the image side with one expert active and "
                       "with all experts, from the configuration alone (no weights needed).")
    _add_model_options(p)
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("data", help="inspect and shard manifests", description="Inspect and shard manifests.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data_sub.add_parser("check", help="read every row and image of a manifest and summarise",
                            description="Read every row of MANIFEST (decoding each image) and print rows, usable "
                            "rows, per-modality counts and each unusable row with its reason. Exit 1 if none is usable.")
    q.add_argument("manifest")
    q.add_argument("--json", metavar="FILE", help='write {"rows", "usable", "per_modality", "unusable"} as JSON')
    q.set_defaults(func=cmd_data_check)
    q = data_sub.add_parser("shard", help="write a manifest's usable rows as webdataset tar shards",
                            description="Write OUT/000000.tar, ... (image file bytes as they are, report, metadata) "
                            "and OUT/shards.json, for medmoe train --data 'OUT/{000000..00000K}.tar'.")
    q.add_argument("manifest")
    q.add_argument("out", help="output folder (new, or without .tar files)")
    q.add_argument("--shard-size", type=int, required=True, metavar="N", help="samples per shard (at most)")
    q.add_argument("--split", metavar="NAME", help="only this split's rows (default: all rows)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_data_shard)
    q = data_sub.add_parser("prepare", help="write the manifest of a dataset as its publisher ships it",
                            description="Read DATASET under --root exactly as its publisher distributes it and write "
                            "MANIFEST (image, report, modality where the source states it, split, dataset). Rows "
                            "without an image file or with an empty report are skipped and counted.",
                            epilog=_prepare_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("dataset", metavar="DATASET")
    q.add_argument("--root", required=True, metavar="DIR", help="the dataset's folder, as downloaded and unpacked")
    q.add_argument("--out", required=True, metavar="MANIFEST", help="output manifest (.jsonl)")
    q.add_argument("--seed", type=int, default=0, help="seed of the split where the source has none (default: 0)")
    q.add_argument("--list", metavar="FILE", help="benchmarks: a fixed list; the chexpert-5x200 selection "
                   "(UniMed-CLIP's chexpert-5x200.csv) or the test split of rsna-pneumonia, thyroid-us, breast-us and "
                   "mrnet-* (RadImageNet's/UniMed-CLIP's fold-1 test CSVs)")
    q.add_argument("--plane", choices=("axial", "coronal", "sagittal"), help="mrnet-*: the plane (default: sagittal)")
    q.add_argument("--slice", type=int, metavar="N", help="mrnet-*: the slice index (default: each exam's middle slice)")
    q.add_argument("--json", metavar="FILE", help="also write the summary as JSON")
    q.set_defaults(func=cmd_data_prepare)

    p = sub.add_parser("label-modality", help="fill missing modality labels of a manifest from the report text",
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
    p.add_argument("--json", metavar="FILE", help='write the counts (and, with --images, "image_classifier" and '
                   '"disagreements": row, text label, image label, probability) as JSON')
    p.set_defaults(func=cmd_label_modality)

    p = sub.add_parser("train", help="pretrain MedMoE on a manifest or webdataset shards",
                       description="Train on the manifest's train split (or on shards), score the val split "
                       "periodically. Data-parallel under torchrun: torchrun --nproc_per_node N -m medmoe train ...")
    p.add_argument("--variant", default="medmoe", choices=registry.names("variants"),
                   help="medmoe (default), or a baseline: static (one multi-scale head), single-scale "
                   "(stage-3 features only), soft-moe (all experts, router-weighted)")
    _add_model_options(p)
    _add_recipe_options(p)
    add_options(p, TrainArgs)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="MedSynth, MedMoE vs the static baseline, evaluation and report.md",
                       description="Generate MedSynth, train MedMoE and the static baseline with the same seed and "
                       "number of steps, evaluate both on the test split and write report.md. --minutes boxes the "
                       "time once: the first model's pace over its first steps fixes the steps every model trains.")
    p.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")
    p.add_argument("--n", type=int, default=3000, help="MedSynth images (default: 3000)")
    p.add_argument("--variants", nargs="+", default=["medmoe", "static"], choices=registry.names("variants"),
                   help="models to train and compare (default: medmoe static)")
    _add_model_options(p)
    _add_recipe_options(p)
    add_options(p, TrainArgs, skip=("data", "out", "resume", "val", "stop_at"), defaults={"steps": 240, "time_limit": 8.0},
                flags={"time_limit": "--minutes"})  # every model's steps; the time box that can lower them
    p.set_defaults(func=cmd_demo, preset="small", resume=None)

    p = sub.add_parser("eval", help="evaluate a trained model (zero-shot, retrieval, probing, routing, grounding)",
                       description="Evaluate a model folder or training run on a manifest split; prints tables, "
                       "optionally writes JSON.")
    p.add_argument("task", choices=["zeroshot", "retrieval", "linear-probe", "routing", "grounding", "all"])
    p.add_argument("--model", required=True, metavar="RUN", help="model folder or training run folder")
    p.add_argument("--data", required=True, metavar="MANIFEST")
    p.add_argument("--split", default="test", help="split to evaluate (default: test); linear probes train on 'train'")
    p.add_argument("--prompts", metavar="FILE", help="zero-shot prompts JSON (default: MedSynth's)")
    p.add_argument("--scoring", choices=SCORINGS, default=DEFAULT_SCORING,
                   help=f"zero-shot class score: global cosine, GLoRIA's local similarity over the routed expert's "
                   f"map, or their mean (default: {DEFAULT_SCORING})")
    p.add_argument("--ensemble", choices=ENSEMBLES, default=DEFAULT_ENSEMBLE,
                   help=f"combine a class's prompts by the mean embedding (CLIP) or the best prompt (GLoRIA) "
                   f"(default: {DEFAULT_ENSEMBLE})")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    from .data.benchmarks import DATASETS

    p = sub.add_parser("benchmark", help="the paper's Tables 1-2 (zero-shot, linear probe) on the benchmark datasets",
                       description="Prepare (or reuse) every benchmark dataset found under --root, run zero-shot with "
                       "its shipped prompts and the linear probe (1/10/100 % of the train split, stratified, C chosen "
                       "on the val split, mean ± sd over --seeds), and print Tables 1 and 2 in the paper's column "
                       "order beside the paper's MedMoE numbers. A dataset not found is listed as skipped.",
                       epilog=_benchmark_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="RUN", help="model folder or training run folder")
    p.add_argument("--root", required=True, metavar="DIR", help="one folder per dataset (see below)")
    p.add_argument("--datasets", nargs="+", metavar="NAME", choices=list(DATASETS),
                   help=f"only these of {', '.join(DATASETS)} (default: all)")
    p.add_argument("--manifests", metavar="DIR", help="where manifests are prepared and reused (default: "
                   "DIR/medmoe-manifests; delete a manifest to prepare it again)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the CheXpert prompt sample (default: 0)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="linear-probe seeds (default: 0 1 2)")
    p.add_argument("--scoring", choices=SCORINGS, default=DEFAULT_SCORING,
                   help=f"zero-shot class score (as medmoe eval; default: {DEFAULT_SCORING})")
    p.add_argument("--ensemble", choices=ENSEMBLES, default=DEFAULT_ENSEMBLE,
                   help=f"combine a class's prompts (as medmoe eval; default: {DEFAULT_ENSEMBLE})")
    p.add_argument("--json", metavar="FILE", help="write zeroshot, linear_probe and skipped as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the two tables as Markdown")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("explain", help="word-region attention maps of one image and report (paper Figure 3)",
                       description="Overlay each word's attention on the image and name the routed expert.")
    p.add_argument("--model", required=True, metavar="RUN", help="model folder or training run folder")
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, DICOM, NIfTI)")
    p.add_argument("--report", required=True, help="report text")
    p.add_argument("--out", required=True, metavar="PNG", help="output figure")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("classify", help="zero-shot class probabilities of image files",
                       description="Print each image's class probabilities (softmax over the zero-shot scores), the "
                       "expert the image router chose and the modalities assigned to it. An unreadable file is a "
                       "line saying why; exit 1 only if no file could be read.")
    p.add_argument("--model", required=True, metavar="M", help="model folder, training run or Hub id org/name")
    p.add_argument("--image", required=True, nargs="+", metavar="PATH", help="image files (DICOM, NIfTI, PNG, JPEG)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="class names (each its own prompt)")
    p.add_argument("--prompts", metavar="FILE", help='JSON {"classes": {name: [phrases]}, "templates": [...]}; '
                   "with --classes, only those classes")
    p.add_argument("--json", metavar="FILE", help='write [{"image", "probabilities", "expert", "modality"}] as JSON')
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("app", help="a local web page: upload an image, see class probabilities and word attention",
                       description="Serve a page (no internet needed) to upload a DICOM/NIfTI/PNG/JPEG and type class "
                       "names and/or a report; it shows class probabilities, the routed expert with the router's "
                       "probabilities, and each report word's attention over the image.")
    p.add_argument("--model", required=True, metavar="M", help="model folder, training run or Hub id org/name")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("export", help="export the image and text encoders to ONNX",
                       description="Write image_encoder.onnx, text_encoder.onnx, the tokenizer and config.json to "
                       "DIR (see medmoe/export.py for the graphs' inputs and outputs).")
    p.add_argument("--model", required=True, metavar="M", help="model folder, training run or Hub id org/name")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="export format (default: onnx)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("config", help="print a preset's configuration with overrides applied",
                       description="Print the resolved configuration as JSON.")
    _add_model_options(p)
    p.set_defaults(func=cmd_config)
    return parser


def _error(exc: Exception, status: int) -> int:
    print(f"medmoe: error: {exc}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, TrainingError) as exc:  # the data or the run could not be used
        return _error(exc, 1)
    except (ConfigError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
            ImportError) as exc:  # what the user asked for cannot be
        return _error(exc, 2)
    except KeyboardInterrupt:
        print("medmoe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
