"""The demo pipeline (``medmoe demo``, ``make demo``): MedSynth -> MedMoE and baselines trained with the
same seed and steps -> ``medmoe eval all`` on the test split -> ``report.md`` with attention figures.

    run_demo({"medmoe": load_config("small"), "static": load_config("small", "static")},
             TrainArgs(data="runs/demo/medsynth/manifest.jsonl", out="runs/demo", steps=240))

writes ``OUT/medsynth/`` (if absent), ``OUT/VARIANT/`` (each model's run folder), ``OUT/eval_VARIANT.json``
and ``OUT/report/report.md``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .config import MedMoEConfig
from .data.manifest import read_manifest
from .data.synth import generate
from .eval.explain import explain
from .eval.report import write_report
from .eval.run import evaluate, format_task
from .model.medmoe import MedMoE
from .train.args import TrainArgs
from .train.loop import train


def synth_manifest(out: str | Path) -> Path:
    """Where the demo in folder ``out`` keeps its MedSynth manifest."""
    return Path(out) / "medsynth" / "manifest.jsonl"


def run_demo(configs: dict[str, MedMoEConfig], args: TrainArgs, n: int = 3000) -> Path:
    """Train each variant of ``configs`` with ``args`` (its ``out``: the demo folder, each model in
    ``out/VARIANT``; its ``data``: the MedSynth manifest, generated with ``n`` images if absent),
    evaluate each on the test split and write the report; returns ``report.md``'s path."""
    root, manifest = Path(args.out), Path(args.data)
    if not manifest.is_file():
        print(f"generating MedSynth ({n} images) in {manifest.parent}")
        generate(manifest.parent, n=n, seed=args.seed, size=next(iter(configs.values())).image_size)
    results, logs = {}, {}
    for variant, config in configs.items():
        run = root / variant
        print(f"\n[{variant}] training: {args.steps} steps, at most {args.time_limit} min")
        train(config, dataclasses.replace(args, data=str(manifest), out=str(run), resume=None))
        print(f"[{variant}] evaluating on the test split")
        results[variant] = {"model": str(run), "variant": variant,
                            **evaluate(MedMoE.from_pretrained(run), manifest, "test", progress=False)}
        (root / f"eval_{variant}.json").write_text(json.dumps(results[variant], indent=2) + "\n")
        logs[variant] = run / "metrics.jsonl"
    figures = attention_figures(MedMoE.from_pretrained(root / next(iter(configs))), manifest, root / "report")
    report = write_report(root / "report", results, logs, figures)
    for variant, result in results.items():
        print(f"\n{variant}: zero-shot (test)\n{format_task('zeroshot', result['zeroshot'])}")
        r = result["retrieval"]
        print(f"{variant}: retrieval R@1 image->text {r['i2t_r1']:.3f}, text->image {r['t2i_r1']:.3f} "
              f"(chance {1 / r['n']:.3f}, {r['n']} test pairs)")
    print(f"\nreport:  {report}\nmodels:  " + ", ".join(str(root / v) for v in configs) +
          "  (MedMoE.from_pretrained(folder))\nlogs:    " + ", ".join(str(p) for p in logs.values()))
    return report


def attention_figures(model, manifest: Path, out: Path) -> list[Path]:
    """One explain figure per modality: the first test image with a masked finding."""
    figures, seen = [], set()
    for row in read_manifest(manifest).split("test"):
        if row.mask is None or row.modality in seen:
            continue
        seen.add(row.modality)
        figures.append(explain(model, row.image, row.report, out / f"attention_{row.modality}.png",
                               title=f"{row.modality}: {row.labels[0]}")[0])
    return figures
