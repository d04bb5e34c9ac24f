"""``medmoe benchmark``: the paper's Tables 1 (zero-shot) and 2 (linear probe) on the datasets a user holds.

``root`` has one folder per dataset in its publisher's layout (``data.benchmarks.FOLDERS``: ``mrnet`` serves both
MRNet tasks, ``medimeta`` the three CT views). Each dataset found is prepared once into ``manifests``
(default ``root/medmoe-manifests/<dataset>.jsonl``, derived images beside it; an existing manifest is
reused: delete it to prepare again) and evaluated on its own, never pooled with another:

- zero-shot (Table 1): the dataset's shipped prompts (``medmoe/data/prompts/``), scored with
  ``scoring``/``ensemble`` on the test split (CheXpert 5x200: all its images, GLoRIA's zero-shot set);
- linear probe (Table 2): ``eval.probe`` on the frozen image embeddings of the train/val/test splits.

A dataset whose folder is missing, or does not hold its layout, is skipped with the reason. The
paper's own MedMoE numbers (``medmoe/data/paper_results.json``) are printed beside ours; each table's
"Avg." is the mean over the datasets both rows report, so the two averages are comparable.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Callable

from ..data.benchmarks import DATASETS, FOLDERS, load_dataset_prompts, prepare
from ..data.manifest import read_manifest
from ..errors import DataError
from . import DEFAULT_ENSEMBLE, DEFAULT_SCORING
from .embed import embed_rows
from .probe import FRACTIONS, SEEDS, linear_probe_scores
from .zeroshot import embed_prompts, zeroshot_scores

MANIFESTS = "medmoe-manifests"
ZEROSHOT_SPLITS = {"chexpert-5x200": ("train", "val", "test")}  # default: ("test",)
PROMPTS_PER_CLASS = {"chexpert-5x200": 5}  # GLoRIA's generate_chexpert_class_prompts(n=5); default: all
PAPER = "MedMoE (paper)"


def paper_results() -> dict:
    """The paper's MedMoE rows of Tables 1 and 2 (accuracy, %), with their ``_source``."""
    return json.loads((resources.files("medmoe") / "data" / "paper_results.json").read_text())


def _manifest(name: str, root: Path, manifests: Path, seed: int, log: Callable[[str], None]) -> Path:
    """The dataset's manifest: reused when present, else prepared from ``root/FOLDERS[name]``."""
    out = manifests / f"{name}.jsonl"
    if out.exists():
        log(f"{name}: reusing {out} (delete it to prepare again)")
        return out
    folder = root / FOLDERS[name]
    if not folder.is_dir():
        raise DataError(f"no folder {folder}")
    summary = prepare(name, folder, out, seed=seed)
    for warning in summary["warnings"]:
        log(f"{name}: warning: {warning}")
    log(f"{name}: prepared {summary['rows']} rows -> {out}")
    return out


def evaluate_dataset(model, name: str, manifest: Path, seed: int = 0, seeds=SEEDS, scoring: str = DEFAULT_SCORING,
                     ensemble: str = DEFAULT_ENSEMBLE, progress: bool = True) -> tuple[dict, dict]:
    """(zero-shot metrics, linear-probe fractions) of one prepared dataset."""
    data = read_manifest(manifest)
    prompts = load_dataset_prompts(name, n=PROMPTS_PER_CLASS.get(name), seed=seed)
    bank = embed_prompts(model, prompts["classes"], prompts.get("templates"))
    splits = ZEROSHOT_SPLITS.get(name, ("test",))
    scored = embed_rows(model, [r for r in data.rows if r.split in splits], progress=progress,
                        prompts=bank if scoring != "global" else None)
    rest = embed_rows(model, [r for r in data.rows if r.split not in splits], progress=progress)
    zeroshot = zeroshot_scores(scored, bank, scoring, ensemble).get("per_dataset", {}).get(name)
    zeroshot = zeroshot and {"accuracy": zeroshot["accuracy"], "balanced_accuracy": zeroshot["balanced_accuracy"],
                             "auc": zeroshot["macro_auc"], "n": zeroshot["n"]}
    split = {s: (scored if s in splits else rest).split(s) for s in ("train", "val", "test")}
    probe = linear_probe_scores(split["train"], split["test"], split["val"], seeds=seeds, progress=progress)
    return zeroshot, probe.get("per_dataset", {}).get(name, {}).get("fractions", {})


def benchmark(model, root, datasets=None, manifests=None, seed: int = 0, seeds=SEEDS, scoring: str = DEFAULT_SCORING,
              ensemble: str = DEFAULT_ENSEMBLE, progress: bool = True, log: Callable[[str], None] = lambda _: None) -> dict:
    """Tables 1 and 2 of ``model`` on every dataset of ``datasets`` (default: all) found under ``root``.
    ``seed`` makes the splits and samples the CheXpert prompts; ``seeds`` are the linear probe's."""
    root = Path(root)
    manifests = Path(manifests) if manifests else root / MANIFESTS
    result = {"root": str(root), "manifests": str(manifests), "scoring": scoring, "ensemble": ensemble,
              "seeds": list(seeds), "datasets": {}, "zeroshot": {}, "linear_probe": {}, "skipped": {}}
    for name in [d for d in DATASETS if d in (datasets or DATASETS)]:
        try:
            manifest = _manifest(name, root, manifests, seed, log)
        except DataError as exc:
            result["skipped"][name] = str(exc)
            log(f"{name}: skipped: {exc}")
            continue
        result["datasets"][name] = str(manifest)
        log(f"{name}: zero-shot and linear probe")
        zeroshot, probe = evaluate_dataset(model, name, manifest, seed, seeds, scoring, ensemble, progress)
        if zeroshot:
            result["zeroshot"][name] = zeroshot
        else:
            log(f"{name}: no zero-shot result (no labelled test image)")
        if probe:
            result["linear_probe"][name] = probe
        else:
            log(f"{name}: no linear probe (it needs two classes in the train split and test images)")
    return result


def _average(names: list[str], *rows: dict) -> list[str]:
    """Each row's mean over the columns of ``names`` that every row has (``-`` when there is none)."""
    shared = [c for c in names if all(row.get(c) is not None for row in rows)]
    return [f"{sum(row[c] for c in shared) / len(shared):.2f}" if shared else "-" for row in rows]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def tables(result: dict, paper: dict | None = None) -> str:
    """Tables 1 and 2 in Markdown, columns in the paper's order (accuracy, %); ours beside the paper's row."""
    paper = paper or paper_results()
    names = [d for d in DATASETS if d in result["datasets"] or d in result["skipped"]]

    def cells(text: dict[str, str], skipped=()) -> list[str]:
        return ["skipped" if d in skipped else text.get(d, "-") for d in names]

    ours = {d: 100 * r["accuracy"] for d, r in result["zeroshot"].items()}
    theirs = paper["zeroshot"]
    avg = _average(names, ours, theirs)
    lines = [f"Table 1: zero-shot accuracy (%), {result['scoring']} scoring, {result['ensemble']} ensemble", "",
             *_table(["", *names, "Avg."], [
                 ["ours", *cells({d: f"{v:.2f}" for d, v in ours.items()}, result["skipped"]), avg[0]],
                 [PAPER, *cells({d: f"{v:.2f}" for d, v in theirs.items()}), avg[1]]])]
    rows = []
    for f in map(str, FRACTIONS):
        probe = {d: r[f] for d, r in result["linear_probe"].items() if f in r}
        ours = {d: 100 * r["accuracy_mean"] for d, r in probe.items()}
        theirs = {d: r[f] for d, r in paper["linear_probe"].items()}
        avg = _average(names, ours, theirs)
        text = {d: f"{ours[d]:.2f} ± {100 * r['accuracy_sd']:.2f}" for d, r in probe.items()}
        label = f"{float(f):.0%}"
        rows += [[label, "ours", *cells(text, result["skipped"]), avg[0]],
                 [label, PAPER, *cells({d: f"{v:.2f}" for d, v in theirs.items()}), avg[1]]]
    lines += ["", f"Table 2: linear-probe accuracy (%), mean ± sd over {len(result['seeds'])} seeds", "",
              *_table(["labels", "", *names, "Avg."], rows), "",
              f"Avg.: mean over the datasets both rows report. {PAPER}: {paper['_source']}."]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{d} ({why})" for d, why in result["skipped"].items())]
    return "\n".join(lines)
