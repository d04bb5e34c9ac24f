"""Do the experts earn their place? MedMoE's configurations against the static baseline at equal steps,
over seeds, as learning curves (issue 19).

    PYTHONPATH=src python benchmarks/ablation.py --out runs/ablation --seeds 0 1 2 --budgets 1 2
    PYTHONPATH=src python benchmarks/ablation.py --out runs/ablation --budgets 4 --configs static medmoe shared
    PYTHONPATH=src python benchmarks/ablation.py --out runs/ablation --summary --json s.json --figure curves.png
    PYTHONPATH=src python benchmarks/ablation.py --out runs/ablation --summary --markdown

The demo's data (MedSynth, 3000 images, seed 0, 96 px) and preset (``small``; ``--preset tiny`` for a
faster screen), the default recipe, batch 32. One run per (configuration, seed), planned for ``--planned`` steps (default 4 x the demo's
240, cosine schedule over all of them) and stopped at each budget (``--stop-at``): the checkpoint at
b x 240 steps is evaluated (``medmoe eval all`` on the test split) and the run later resumes from it
exactly, so budgets are points of one learning curve, not separate runs. Every (configuration, seed,
step) result is cached in ``OUT/CONFIG/seedS/eval-step-N.json``: the study runs in several sittings and
takes up where it stopped. ``--summary`` prints mean ± sd per configuration and budget (one JSON line
each) and draws the learning curves (metric vs step, one line per configuration, shaded ± sd).
"""
import argparse
import json
import statistics
from pathlib import Path

from medmoe.config import load_config
from medmoe.data.synth import generate
from medmoe.eval.run import evaluate
from medmoe.model.medmoe import MedMoE
from medmoe.runs import latest_checkpoint, trained_steps
from medmoe.train.args import TrainArgs
from medmoe.train.loop import train

DEMO_STEPS = 240
# name -> (variant, overrides): the static baseline, the paper's MedMoE (random-init experts and GLoRIA's word
# attention, whatever the preset's defaults), the remedies of issue 19 and the default before issue 23's attention
GLORIA = {"attention": "gloria", "temp1": 4.0}
PAPER = {"expert_init": "random", **GLORIA}
CONFIGS = {
    "static": ("static", {}),
    "medmoe": ("medmoe", PAPER),
    "upcycle-gloria": ("medmoe", GLORIA),  # the default until issue 23: upcycled experts, GLoRIA's attention
    "k1": ("medmoe", {**PAPER, "num_experts": 1}),  # one expert, no routing: the expert head without the routing
    "oracle": ("medmoe", {**PAPER, "routing": "label"}),  # the modality label picks the expert in training
    "upcycle-60": ("medmoe", {"expert_init": "upcycle", "upcycle_step": 60}),
    "upcycle-120": ("medmoe", {"expert_init": "upcycle", "upcycle_step": 120}),
    "shared": ("medmoe", {**PAPER, "shared_expert": True}),
    "no-aux": ("medmoe", {**PAPER, "w_aux": 0.0}),
    "detached-routers": ("medmoe", {**PAPER, "detach_routers": True}),
}
METRICS = {  # name in the summary -> path in medmoe eval all's JSON
    "zeroshot_accuracy": ("zeroshot", "accuracy"), "zeroshot_auc": ("zeroshot", "macro_auc"),
    "probe_1": ("linear_probe", "fractions", "0.01", "accuracy_mean"),
    "probe_10": ("linear_probe", "fractions", "0.1", "accuracy_mean"),
    "probe_100": ("linear_probe", "fractions", "1.0", "accuracy_mean"),
    "i2t_r1": ("retrieval", "i2t_r1"), "i2t_r10": ("retrieval", "i2t_r10"),
    "t2i_r1": ("retrieval", "t2i_r1"), "t2i_r10": ("retrieval", "t2i_r10"),
    "pointing_game": ("grounding", "pointing_game"), "pointing_uniform": ("grounding", "uniform_pointing_game"),
    "pointing_init": ("grounding", "init", "pointing_game"), "attention_in_mask": ("grounding", "attention_in_mask"),
    **{f"pointing_{m}": ("grounding", "per_modality", m, "pointing_game") for m in ("xray", "ct", "mri", "ultrasound")},
    "router_image": ("routing", "image", "accuracy"), "router_text": ("routing", "text", "accuracy"),
}


def lookup(result: dict, path: tuple[str, ...]):
    for key in path:
        result = result.get(key) if isinstance(result, dict) else None
    return result


def run_to(name: str, seed: int, step: int, args, manifest: Path) -> dict:
    """The cached evaluation of configuration ``name``, seed ``seed``, at ``step``: trained (or resumed)
    up to that step and evaluated if not cached yet."""
    run = Path(args.out) / name / f"seed{seed}"
    cached = run / f"eval-step-{step:06d}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    done = trained_steps(run) or 0
    if done > step:
        raise SystemExit(f"{run} is at step {done}, past {step}: its checkpoint at {step} is gone; delete the run")
    if done < step:
        variant, overrides = CONFIGS[name]
        train(load_config(args.preset, variant, **overrides),
              TrainArgs(data=str(manifest), out=str(run), steps=args.planned, stop_at=step, seed=seed,
                        batch_size=args.batch_size, workers=args.workers, eval_every=10**9,
                        checkpoint_every=DEMO_STEPS, resume=str(run) if done else None, progress=False))
    result = evaluate(MedMoE.from_pretrained(latest_checkpoint(run) / "model"), manifest, "test", progress=False)
    scores = {"config": name, "seed": seed, "step": step,
              **{metric: lookup(result, path) for metric, path in METRICS.items()}}
    cached.write_text(json.dumps(scores) + "\n")
    return scores


def summary(out: Path) -> list[dict]:
    """Mean, sd and n over seeds of every cached metric, per configuration and step."""
    cells: dict[tuple[str, int], list[dict]] = {}
    for path in sorted(out.glob("*/seed*/eval-step-*.json")):
        r = json.loads(path.read_text())
        cells.setdefault((r["config"], r["step"]), []).append(r)
    lines = []
    for (name, step), runs in sorted(cells.items(), key=lambda c: (list(CONFIGS).index(c[0][0]), c[0][1])):
        line = {"config": name, "step": step, "seeds": sorted(r["seed"] for r in runs)}
        for metric in METRICS:
            values = [r[metric] for r in runs if r.get(metric) is not None]
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                line[metric] = [round(statistics.mean(values), 4), round(sd, 4)]
        lines.append(line)
    return lines


def draw(lines: list[dict], path: Path, metrics=("zeroshot_accuracy", "zeroshot_auc", "probe_100", "probe_1",
                                                 "pointing_game", "i2t_r10")) -> None:
    """Metric vs step, one line per configuration, shaded ± sd over seeds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 8))
    for ax, metric in zip(fig.subplots(2, 3).ravel(), metrics):
        for colour, name in enumerate(dict.fromkeys(line["config"] for line in lines)):
            points = [(line["step"], *line[metric]) for line in lines if line["config"] == name and metric in line]
            if not points:
                continue
            steps, mean, sd = (list(v) for v in zip(*points))
            style = "-" if name in ("static", "medmoe") else "--"
            ax.plot(steps, mean, style, marker="o", color=f"C{colour}", label=name)
            ax.fill_between(steps, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                            color=f"C{colour}", alpha=0.12)
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("training step")
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def markdown(lines: list[dict]) -> str:
    """The summary as one Markdown table: mean ± sd over seeds, a row per (configuration, step)."""
    header = ["config", "step", "seeds", *METRICS]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in lines:
        cells = [f"{line[m][0]:.3f} ± {line[m][1]:.3f}" if m in line else "-" for m in METRICS]
        rows.append(f"| {line['config']} | {line['step']} | {len(line['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2], help="multiples of the demo's 240 steps")
    parser.add_argument("--planned", type=int, default=4 * DEMO_STEPS, help="steps each run's schedule is planned for")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--n", type=int, default=3000, help="MedSynth images (the demo's data)")
    parser.add_argument("--size", type=int, default=96, help="MedSynth image side (the demo's; the preset resizes)")
    parser.add_argument("--summary", action="store_true", help="summarise the cached results; train nothing")
    parser.add_argument("--json", help="with --summary: also write the summary lines to this file")
    parser.add_argument("--figure", help="with --summary: draw the learning curves to this PNG")
    parser.add_argument("--markdown", action="store_true", help="with --summary: print a Markdown table instead")
    args = parser.parse_args()
    out = Path(args.out)
    if args.summary:
        lines = summary(out)
        print(markdown(lines) if args.markdown else "\n".join(json.dumps(line) for line in lines))
        if args.json:
            Path(args.json).write_text("".join(json.dumps(line) + "\n" for line in lines))
        if args.figure:
            draw(lines, Path(args.figure))
        return
    manifest = out / "medsynth" / "manifest.jsonl"
    if not manifest.is_file():
        generate(manifest.parent, n=args.n, seed=0, size=args.size, progress=False)
    for budget in sorted(args.budgets):  # every configuration at 1x before any at 2x: a short sitting screens all
        for seed in args.seeds:
            for name in args.configs:
                print(json.dumps(run_to(name, seed, budget * DEMO_STEPS, args, manifest)), flush=True)


if __name__ == "__main__":
    main()
