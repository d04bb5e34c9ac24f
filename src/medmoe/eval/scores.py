"""Held-out scores the trainer logs: retrieval R@1/R@5 both ways, routing accuracy and, for rows whose
classes MedSynth's shipped prompts name, zero-shot accuracy (so the demo's runs carry learning curves)."""
from __future__ import annotations

from .embed import embed_rows
from .retrieval import recall_at_k
from .routing import routing_scores
from .zeroshot import embed_prompts, load_prompts, zeroshot_scores


def held_out_scores(model, rows, keep_routing: bool = False) -> dict:
    """The scores above as one flat record (``skipped``: rows that could not be read); with ``keep_routing``,
    also ``routing``: ``routing_scores``'s whole result (for the routing figure of ``--log-to``)."""
    spec = load_prompts()
    prompted = any(r.labels and r.labels[0] in spec["classes"].get(r.group, {}) for r in rows)
    bank = embed_prompts(model, spec["classes"], spec.get("templates")) if prompted else None
    e = embed_rows(model, rows, prompts=bank)
    if not len(e):
        return {"n": 0, "skipped": e.skipped}
    n = len(e)
    scores = {"n": n, "chance_r1": round(1 / n, 5),
              **{k: round(v, 4) for k, v in recall_at_k(e.image, e.text, ks=(1, 5)).items()}}
    routing = routing_scores(model, e)
    if routing["num_experts"] and (e.modality >= 0).any():
        for side in ("image", "text"):
            scores[f"routing_acc_{side}"] = round(routing[side]["accuracy"], 4)
    if bank is not None:
        scores["zeroshot_acc"] = round(zeroshot_scores(e, bank)["accuracy"], 4)
    if keep_routing:
        scores["routing"] = routing
    scores["skipped"] = e.skipped
    return scores
