"""The demo pipeline (``medmoe demo``, ``make demo``): MedSynth -> MedMoE and baselines trained with the
same seed and steps -> ``medmoe eval all`` on the test split -> ``report.md`` with attention figures.

Every model trains the same number of steps. A time box (``args.time_limit``, minutes) is set once,
from the first model's pace: it trains ``PACE_STEPS`` steps in a scratch run, the seconds per step
after its first (warm-up) step fix the steps that fit in the box, and every model, the first
included, then trains exactly that many steps on that schedule, without a time limit of its own.

    run_demo({"medmoe": load_config("small"), "static": load_config("small", "static")},
             TrainArgs(data="runs/demo/medsynth/manifest.jsonl", out="runs/demo", steps=240))

writes ``OUT/medsynth/`` (if absent), ``OUT/VARIANT/`` (each model's run folder), ``OUT/eval_VARIANT.json``
and ``OUT/report/report.md``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

from .config import MedMoEConfig
from .data.manifest import read_manifest
from .data.synth import generate
from .eval.explain import explain
from .eval.report import write_report
from .eval.run import evaluate, format_task
from .files import atomic_write_text
from .model.medmoe import MedMoE
from .runs import trained_steps
from .train.args import TrainArgs
from .train.loop import train


def synth_manifest(out: str | Path) -> Path:
    """Where the demo in folder ``out`` keeps its MedSynth manifest."""
    return Path(out) / "medsynth" / "manifest.jsonl"


PACE_STEPS = 5  # steps of the first model timed to fix every model's step count under a time box


def seconds_per_step(config: MedMoEConfig, args: TrainArgs) -> float:
    """The pace of ``config`` trained with ``args``: seconds per step over steps 2..PACE_STEPS of a
    scratch run (step 1 warms up: data workers start, buffers are allocated)."""
    with tempfile.TemporaryDirectory() as scratch:
        train(config, dataclasses.replace(args, out=scratch, steps=PACE_STEPS, epochs=None, time_limit=None,
                                          resume=None, log_every=1, eval_every=PACE_STEPS + 1, progress=False))
        records = map(json.loads, (Path(scratch) / "metrics.jsonl").read_text().splitlines())
        times = {r["step"]: r["time_s"] for r in records if r.get("split") == "train"}
    first, last = min(times), max(times)
    return (times[last] - times[first]) / max(1, last - first)


def budget_steps(config: MedMoEConfig, args: TrainArgs) -> tuple[int, float | None]:
    """(steps every model trains, the first model's seconds per step or None when not measured): all of
    ``args.steps`` without a time box, else as many as fit in ``args.time_limit`` minutes (at least 1)."""
    if args.time_limit is None or args.steps <= PACE_STEPS:
        return args.steps, None
    pace = seconds_per_step(config, args)
    return max(1, min(args.steps, math.floor(60 * args.time_limit / max(pace, 1e-9)))), pace


def run_demo(configs: dict[str, MedMoEConfig], args: TrainArgs, n: int = 3000) -> Path:
    """Train each variant of ``configs`` with ``args`` (its ``out``: the demo folder, each model in
    ``out/VARIANT``; its ``data``: the MedSynth manifest, generated with ``n`` images if absent) for
    the same number of steps (``budget_steps``), evaluate each on the test split and write the report;
    returns ``report.md``'s path."""
    root, manifest = Path(args.out), Path(args.data)
    if not manifest.is_file():
        print(f"generating MedSynth ({n} images) in {manifest.parent}")
        generate(manifest.parent, n=n, seed=args.seed, size=next(iter(configs.values())).image_size)
    args = dataclasses.replace(args, data=str(manifest), resume=None, epochs=None)
    first = next(iter(configs))
    steps, pace = budget_steps(configs[first], args)
    budget = f"every model trains {steps} steps"
    if pace is not None:
        budget += (f" (time box {args.time_limit:g} min; the first model, {first}, took {pace:.2f} s per step "
                   f"over its first {PACE_STEPS} steps)")
    print(budget)
    results, logs = {}, {}
    for variant, config in configs.items():
        run = root / variant
        print(f"\n[{variant}] training: {steps} steps")
        train(config, dataclasses.replace(args, out=str(run), steps=steps, time_limit=None))
        print(f"[{variant}] evaluating on the test split")
        results[variant] = {"model": str(run), "variant": variant,
                            **evaluate(MedMoE.from_pretrained(run), manifest, "test", progress=False)}
        atomic_write_text(root / f"eval_{variant}.json", json.dumps(results[variant], indent=2) + "\n")
        logs[variant] = run / "metrics.jsonl"
    figures = attention_figures(MedMoE.from_pretrained(root / first), manifest, root / "report",
                                results[first].get("grounding"))
    report = write_report(root / "report", results, logs, figures, notes=f"Budget: {budget}.")
    for variant, result in results.items():
        print(f"\n{variant}: zero-shot (test)\n{format_task('zeroshot', result['zeroshot'])}")
        r = result["retrieval"]
        print(f"{variant}: retrieval R@1 image->text {r['i2t_r1']:.3f}, text->image {r['t2i_r1']:.3f} "
              f"(chance {1 / r['n']:.3f}, {r['n']} test pairs)")
    print("\nsteps trained: " + ", ".join(f"{v} {trained_steps(root / v)}" for v in configs))
    print(f"\nreport:  {report}\nmodels:  " + ", ".join(str(root / v) for v in configs) +
          "  (MedMoE.from_pretrained(folder))\nlogs:    " + ", ".join(str(p) for p in logs.values()))
    return report


def attention_figures(model, manifest: Path, out: Path, grounding: dict | None = None) -> list[Path]:
    """One explain figure per modality: the first test image with a masked finding, the maps of its report's
    findings with the mask outlined, and the modality's pointing game on the test split (``grounding``: the
    model's ``medmoe eval grounding`` result) beside a uniform map's and the model's at initialisation."""
    figures, seen = [], set()
    for row in read_manifest(manifest).split("test"):
        if row.mask is None or row.modality in seen:
            continue
        seen.add(row.modality)
        title = f"{row.modality}: {row.labels[0]}"
        scores = (grounding or {}).get("per_modality", {}).get(row.modality, {})
        if "pointing_game" in scores:
            start = grounding.get("init", {}).get("per_modality", {}).get(row.modality, {}).get("pointing_game")
            title += (f"\npointing game (test, {scores['n']} findings) {scores['pointing_game']:.3f}, uniform map "
                      f"{scores['uniform_pointing_game']:.3f}" + (f", at initialisation {start:.3f}" if start is not None
                                                                   else ""))
        figures.append(explain(model, row.image, row.report, out / f"attention_{row.modality}.png", title=title,
                               mask=row.mask)[0])
    return figures
