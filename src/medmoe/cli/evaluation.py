"""``medmoe eval``, ``benchmark`` and ``explain``: what a trained model does."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import variant_of
from ..errors import ConfigError
from ..eval import DEFAULT_ENSEMBLE, DEFAULT_SCORING, ENSEMBLES, SCORINGS
from .common import add_compile, add_json, add_model, add_out, load_model, write_json, write_text


def cmd_eval(args) -> int:
    from ..eval.run import TASKS, evaluate, format_task

    model = load_model(args)
    tasks = TASKS if args.task == "all" else (args.task,)
    result = {"model": str(args.model), "variant": variant_of(model.config),
              **evaluate(model, args.data, args.split, tasks, args.prompts, progress=not args.quiet,
                         scoring=args.scoring, ensemble=args.ensemble)}
    for name in (t.replace("-", "_") for t in tasks):
        print(f"\n{name} ({args.split} split, {result['n']} images)\n{format_task(name, result[name])}")
    if args.json:
        single = tasks[0].replace("-", "_")
        write_json(args.json, result if args.task == "all" else {**result.pop(single), **result})
    return 0


def cmd_benchmark(args) -> int:
    from ..eval.benchmark import benchmark, tables

    leakage = _pretraining_manifests(args.model, args.leakage_check) if args.leakage_check is not None else None
    result = benchmark(load_model(args), args.root, args.datasets, args.manifests, args.seed, args.seeds,
                       args.scoring, args.ensemble, progress=not args.quiet,
                       log=lambda line: print(f"medmoe: {line}", file=sys.stderr), finetune=args.finetune,
                       leakage=leakage)
    text = tables(result)
    print(text)
    write_text(args.markdown, text + "\n")
    write_json(args.json, {"model": str(args.model), **result})
    return 0 if result["zeroshot"] or result["linear_probe"] or result.get("grounding") else 1


def _pretraining_manifests(model: str, given: list[str]) -> list[str]:
    """``--leakage-check``'s manifests: as given, else the ones the training run of ``--model`` recorded in
    its data.json."""
    from ..hub import find_run
    from ..runs import DATA_FILE, training_data

    if given:
        return given
    run = find_run(model) if Path(model).exists() else None
    data = training_data(run)
    if data is None:
        raise ConfigError(f"--leakage-check: {model} is not a training run with {DATA_FILE} (runs trained by this "
                          "version write it): give the pretraining manifests, --leakage-check MANIFEST...")
    if data.get("shards"):
        raise ConfigError(f"--leakage-check: {run} trained on webdataset shards ({data['data']}), which hold no "
                          "manifest to check: give the manifests the shards were written from")
    return [data["data"]]


def cmd_explain(args) -> int:
    from ..eval.explain import explain

    out, expert = explain(load_model(args), args.image, args.report, args.out, title=Path(args.image).name,
                          words=args.words, mask=args.mask)
    print(f"wrote {out}" + (f" (routed to expert {expert})" if expert is not None else ""))
    return 0


def _add_scoring(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scoring", choices=SCORINGS, default=DEFAULT_SCORING,
                   help=f"zero-shot class score: global cosine, GLoRIA's local similarity over the routed expert's "
                   f"map, or their mean (default: {DEFAULT_SCORING})")
    p.add_argument("--ensemble", choices=ENSEMBLES, default=DEFAULT_ENSEMBLE,
                   help=f"combine a class's prompts by the mean embedding (CLIP) or the best prompt (GLoRIA) "
                   f"(default: {DEFAULT_ENSEMBLE})")


def _benchmark_epilog() -> str:
    from ..data.benchmarks import FOLDERS, layouts

    return "folders under --root, each holding what 'medmoe data prepare' reads (its --root):\n" + "\n".join(
        f"  {folder}/ -> {name}: {layouts()[name]}" for name, folder in FOLDERS.items())


def register(sub) -> None:
    from ..data.benchmarks import ADAPTERS

    p = sub.add_parser("eval", help="evaluate a trained model (zero-shot, retrieval, probing, routing, grounding)",
                       description="Evaluate a model on a manifest split; prints tables, optionally writes JSON.")
    p.add_argument("task", choices=["zeroshot", "retrieval", "linear-probe", "routing", "grounding", "all"])
    add_model(p)
    p.add_argument("--data", required=True, metavar="MANIFEST")
    p.add_argument("--split", default="test", help="split to evaluate (default: test); linear probes train on 'train'")
    p.add_argument("--prompts", metavar="FILE", help="zero-shot prompts JSON (default: MedSynth's)")
    _add_scoring(p)
    add_json(p, "write the results as JSON")
    add_compile(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("benchmark", help="the paper's Tables 1-2 (zero-shot, linear probe) on the benchmark datasets",
                       description="Prepare (or reuse) every benchmark dataset found under --root, run zero-shot with "
                       "its shipped prompts and the linear probe (1/10/100 % of the train split, stratified, C chosen "
                       "on the val split, mean ± sd over --seeds), and print Tables 1 and 2 in the paper's column "
                       "order beside the paper's MedMoE numbers. A dataset not found is listed as skipped.",
                       epilog=_benchmark_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model(p)
    p.add_argument("--root", required=True, metavar="DIR", help="one folder per dataset (see below)")
    p.add_argument("--datasets", nargs="+", metavar="NAME", choices=list(ADAPTERS),
                   help=f"only these of {', '.join(ADAPTERS)} (default: all)")
    p.add_argument("--manifests", metavar="DIR", help="where manifests are prepared and reused (default: "
                   "DIR/medmoe-manifests; delete a manifest to prepare it again)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the CheXpert prompt sample (default: 0)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="linear-probe seeds (default: 0 1 2)")
    _add_scoring(p)
    add_json(p, "write zeroshot, linear_probe and skipped as JSON")
    p.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
    p.add_argument("--finetune", choices=("linear", "full", "lora"), metavar="MODE",
                   help="also fine-tune on each dataset's train split (medmoe finetune --mode MODE, one run per seed of "
                   "--seeds) and add our fine-tuning table (test accuracy and macro AUC; the paper has none): "
                   "linear, full or lora")
    p.add_argument("--leakage-check", nargs="*", metavar="PRETRAIN_MANIFEST",
                   help="first check the datasets against these pretraining manifests (medmoe data leakage; none "
                   "given: the manifest --model's training run recorded) and mark contaminated datasets (†)")
    add_compile(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("explain", help="word-region attention maps of one image and report (paper Figure 3)",
                       description="Overlay the attention of the words you ask about (default: the findings the "
                       "report affirms) on the image and name the routed expert.")
    add_model(p)
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, DICOM, NIfTI)")
    p.add_argument("--report", required=True, help="report text")
    p.add_argument("--words", nargs="+", metavar="WORD",
                   help="words or phrases to map, one panel each ('pleural effusion' in quotes); one the report does "
                   "not contain is read on its own (default: the report's affirmed findings, else its most peaked words)")
    p.add_argument("--mask", metavar="FILE", help="the finding's mask: its outline is drawn, each panel says whether "
                   "its peak is inside")
    add_out(p, "PNG", "output figure")
    p.set_defaults(func=cmd_explain)
