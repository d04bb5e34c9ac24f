"""``medmoe eval TASK``: embed the evaluation split once, run the tasks, return one JSON-able dict."""
from __future__ import annotations

from pathlib import Path

from ..data.manifest import read_manifest
from ..errors import ManifestError
from .embed import embed_rows
from .grounding import format_grounding, grounding_scores, initial_model
from .probe import linear_probe_scores
from .retrieval import retrieval_scores
from .routing import routing_scores
from . import DEFAULT_ENSEMBLE, DEFAULT_SCORING
from .zeroshot import embed_prompts, load_prompts, zeroshot_scores

TASKS = ("zeroshot", "retrieval", "linear-probe", "routing", "grounding")


def evaluate(model, manifest: str | Path, split: str = "test", tasks=TASKS, prompts: str | Path | None = None,
             progress: bool = True, scoring: str = DEFAULT_SCORING, ensemble: str = DEFAULT_ENSEMBLE) -> dict:
    data = read_manifest(manifest)
    rows = data.split(split)
    if not rows:
        raise ManifestError(f"{manifest}: no usable row in split {split!r}")
    bank = None
    if "zeroshot" in tasks:
        spec = load_prompts(prompts)
        bank = embed_prompts(model, spec["classes"], spec.get("templates"))
    emb = embed_rows(model, rows, progress=progress, prompts=bank if scoring != "global" else None)
    result: dict = {"split": split, "n": len(emb), "skipped": len(emb.skipped) + len(data.unusable)}
    if "zeroshot" in tasks:
        result["zeroshot"] = zeroshot_scores(emb, bank, scoring, ensemble)
    if "retrieval" in tasks:
        result["retrieval"] = retrieval_scores(emb)
    if "linear-probe" in tasks:
        train = data.split("train") if split != "train" else rows
        val = data.split("val") if split != "val" else []
        result["linear_probe"] = linear_probe_scores(embed_rows(model, train, progress=progress), emb,
                                                     embed_rows(model, val, progress=progress) if val else None)
    if "routing" in tasks:
        result["routing"] = routing_scores(model, emb)
    if "grounding" in tasks:
        init, source = initial_model(model)
        result["grounding"] = {**grounding_scores(model, rows), "init": grounding_scores(init, rows),
                               "init_source": source}
    return result


def format_task(name: str, result: dict) -> str:
    """A plain-text table of one task's result (what ``medmoe eval`` prints)."""
    if name == "grounding":
        return format_grounding(result)
    if name == "linear_probe":
        lines = [f"{'labels':>8} {'accuracy':>16} {'n_train':>8}"]
        for fraction, r in result.get("fractions", {}).items():
            lines.append(f"{float(fraction):>8.0%} {r['accuracy_mean']:>9.3f} ± {r['accuracy_sd']:.3f} {r['n_train']:>8}")
        return "\n".join(lines)
    if name == "routing":
        if not result.get("num_experts"):
            return "no experts (static head): nothing is routed"
        lines = []
        for side in ("image", "text"):
            r = result[side]
            lines.append(f"{side} router: accuracy {r['accuracy']:.3f}, load " + " ".join(f"{x:.2f}" for x in r["load"]))
            lines += [f"  {m:<12} " + " ".join(f"{c:>5}" for c in row) for m, row in zip(result["modalities"], r["confusion"])]
        return "\n".join(lines)
    keys = [k for k, v in result.items() if isinstance(v, float)]
    lines = [f"{'':<12}" + "".join(f"{k:>20}" for k in keys) + f"{'n':>8}"]
    rows = [("all", result), *result.get("per_modality", {}).items()]
    for label, r in rows:
        n = r.get("n", "")
        lines.append(f"{label:<12}" + "".join(f"{r[k]:>20.3f}" if k in r else f"{'-':>20}" for k in keys) + f"{n:>8}")
    return "\n".join(lines)
