"""Image- and text-router accuracy per modality on a skewed MedSynth mix, for each measure against
imbalance (issue 10 item 7): none, modality-balanced sampling, a class-weighted auxiliary loss, a
faster router learning rate. Every model trains the same steps (the demo budget by default).

    PYTHONPATH=src python benchmarks/routing_imbalance.py --out runs/imbalance [--steps 240]

Prints one JSON line per measure: {"measure", "settings", "seconds", "image": {"accuracy",
"per_modality"}, "text": {...}}. A finished model is reused on a rerun.
"""
import argparse
import json
import time
from pathlib import Path

from medmoe.config import load_config
from medmoe.data.synth import generate
from medmoe.eval.run import evaluate
from medmoe.model.medmoe import MedMoE
from medmoe.runs import latest_checkpoint
from medmoe.train.args import TrainArgs
from medmoe.train.loop import train

MIX = {"xray": 0.6, "ct": 0.25, "mri": 0.1, "ultrasound": 0.05}
MEASURES = {
    "none": {"balance": "none"},
    "balance": {"balance": "modality"},
    "aux_class_weight": {"balance": "none", "aux_class_weight": True},
    "router_lr_mult": {"balance": "none", "router_lr_mult": 10.0},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/imbalance")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--preset", default="small")
    args = parser.parse_args()
    manifest = Path(args.out) / "data" / "manifest.jsonl"
    if not manifest.is_file():
        generate(manifest.parent, n=args.n, seed=0, size=load_config(args.preset).image_size, progress=False,
                 mix=MIX)
    for name, settings in MEASURES.items():
        run, began = Path(args.out) / name, time.perf_counter()
        if latest_checkpoint(run) is None:
            train(load_config(args.preset), TrainArgs(data=str(manifest), out=str(run), steps=args.steps,
                                                      workers=1, eval_every=10**9, checkpoint_every=10**9,
                                                      progress=False, **settings))
        routing = evaluate(MedMoE.from_pretrained(run), manifest, "test", tasks=("routing",),
                           progress=False)["routing"]
        print(json.dumps({"measure": name, "settings": settings, "seconds": round(time.perf_counter() - began),
                          **{side: {k: routing[side][k] for k in ("accuracy", "per_modality")}
                             for side in ("image", "text")}}), flush=True)


if __name__ == "__main__":
    main()
