"""MedMoE vs the static baseline on MedSynth at equal steps, for each source of the global image
embedding (``global_source`` backbone | expert) and each zero-shot scoring (global | both), over
several seeds: the evidence behind those defaults (issue 10, item 8).

    PYTHONPATH=src python benchmarks/fidelity.py --out runs/fidelity --steps 200 --seeds 0 1 2

Every model trains with the same recipe, data, batch and number of steps. Prints one JSON line per
trained model, then one summary line {"summary": {cell: {metric: [mean, sd, n]}}}; --json writes both.
A finished model is reused on a rerun (delete its folder to retrain it).
"""
import argparse
import json
import statistics
from pathlib import Path

from medmoe.config import load_config
from medmoe.data.manifest import read_manifest
from medmoe.data.synth import generate
from medmoe.eval.embed import embed_rows
from medmoe.eval.grounding import grounding_scores
from medmoe.eval.probe import linear_probe_scores
from medmoe.eval.retrieval import recall_at_k
from medmoe.eval.zeroshot import embed_prompts, load_prompts, zeroshot_scores
from medmoe.model.medmoe import MedMoE
from medmoe.runs import latest_checkpoint
from medmoe.train.loop import TrainArgs, train

SCORINGS = ("global", "both")


def evaluate(model, manifest: Path) -> dict:
    data = read_manifest(manifest)
    prompts = load_prompts()
    bank = embed_prompts(model, prompts["classes"], prompts.get("templates"))
    test = embed_rows(model, data.split("test"), prompts=bank)
    out = {f"zeroshot_{s}_accuracy": zeroshot_scores(test, bank, s)["accuracy"] for s in SCORINGS}
    out |= {f"zeroshot_{s}_auc": zeroshot_scores(test, bank, s)["macro_auc"] for s in SCORINGS}
    recall = recall_at_k(test.image, test.text, ks=(1, 5))
    out |= {"retrieval_i2t_r1": recall["i2t_r1"], "retrieval_t2i_r1": recall["t2i_r1"]}
    probe = linear_probe_scores(embed_rows(model, data.split("train")), test)["fractions"]
    out |= {f"probe_{float(f):.0%}": r["accuracy_mean"] for f, r in probe.items()}
    grounding = grounding_scores(model, data.split("test"))
    out["pointing_game"] = grounding.get("pointing_game")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/fidelity")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=3000, help="MedSynth images (the demo's data)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", help="also write every line to this file")
    args = parser.parse_args()
    out = Path(args.out)
    manifest = out / "medsynth" / "manifest.jsonl"
    if not manifest.is_file():
        generate(manifest.parent, n=args.n, seed=0, size=load_config(args.preset).image_size, progress=False)
    lines, cells = [], {}
    for seed in args.seeds:
        for source in ("backbone", "expert"):
            for variant in ("medmoe", "static"):
                run = out / f"{variant}-{source}-seed{seed}"
                if latest_checkpoint(run) is None or not (run / "eval.json").is_file():
                    config = load_config(args.preset, variant, global_source=source)
                    train(config, TrainArgs(data=str(manifest), out=str(run), steps=args.steps, seed=seed,
                                            workers=args.workers, eval_every=10**9, checkpoint_every=10**9,
                                            progress=False))
                    (run / "eval.json").write_text(json.dumps(evaluate(MedMoE.from_pretrained(run), manifest)))
                scores = json.loads((run / "eval.json").read_text())
                line = {"variant": variant, "global_source": source, "seed": seed, "steps": args.steps, **scores}
                print(json.dumps(line), flush=True)
                lines.append(line)
                for key, value in scores.items():
                    if value is not None:
                        cells.setdefault(f"{variant}/{source}", {}).setdefault(key, []).append(value)
    summary = {cell: {k: [round(statistics.mean(v), 4), round(statistics.stdev(v), 4) if len(v) > 1 else 0.0, len(v)]
                      for k, v in metrics.items()} for cell, metrics in cells.items()}
    print(json.dumps({"summary": summary}))
    if args.json:
        Path(args.json).write_text("\n".join(json.dumps(x) for x in [*lines, {"summary": summary}]) + "\n")


if __name__ == "__main__":
    main()
