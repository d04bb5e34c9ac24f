"""``medmoe benchmark``: the paper's Tables 1 (zero-shot) and 2 (linear probe) on the datasets a user holds.

``root`` has one folder per dataset in its publisher's layout (``data.benchmarks.FOLDERS``: ``mrnet`` serves both
MRNet tasks, ``medimeta`` the three CT views). Each dataset found is prepared once into ``manifests``
(default ``root/medmoe-manifests/<dataset>.jsonl``, derived images beside it; an existing manifest is
reused: delete it to prepare again) and evaluated on its own, never pooled with another:

- zero-shot (Table 1): the dataset's shipped prompts (``medmoe/data/prompts/``), scored with
  ``scoring``/``ensemble`` on the test split (CheXpert 5x200: all its images, GLoRIA's zero-shot set);
- linear probe (Table 2): ``eval.probe`` on the frozen image embeddings of the train/val/test splits;
- with ``finetune`` (``linear``, ``full`` or ``lora``; ours, the paper has no such table): ``medmoe finetune``
  on the train split with early stopping on val, one run per seed of ``seeds``, test accuracy and macro AUC
  as mean ± sd, beside our linear probe at 100 % of the labels;
- grounding (Table G; the paper shows maps, no numbers): on the test split's rows that mark their finding
  (``data.benchmarks.GROUNDING``): RSNA's boxes with the prompt "pneumonia" (GLoRIA's setting) and MS-CXR's
  phrases and boxes (``eval.grounding``: pointing game, attention in the boxes and CNR, beside a uniform map;
  MS-CXR's CNR beside BioViL's and GLoRIA's published figures).

A dataset whose folder is missing, or does not hold its layout, is skipped with the reason. The
paper's own MedMoE numbers (``medmoe/data/paper_results.json``) are printed beside ours; each table's
"Avg." is the mean over the datasets both rows report, so the two averages are comparable.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Callable

from ..data.benchmarks import ADAPTERS, DATASETS, FOLDERS, GROUNDING, load_dataset_prompts, prepare
from ..data.manifest import read_manifest
from ..errors import DataError
from . import DEFAULT_ENSEMBLE, DEFAULT_SCORING
from .embed import embed_rows
from .grounding import PUBLISHED_CNR, grounding_scores
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


def finetune_dataset(model, manifest: Path, mode: str, seeds=SEEDS, progress: bool = True,
                     log: Callable[[str], None] = lambda _: None) -> dict:
    """Test accuracy and macro AUC (mean ± sd over ``seeds``) of ``medmoe finetune --mode mode`` on one
    prepared dataset (the model itself is left as it was)."""
    import numpy as np

    from ..train.finetune import FinetuneArgs, finetune

    runs = [finetune(model, FinetuneArgs(data=str(manifest), mode=mode, seed=s, progress=progress), log=log).record
            for s in seeds]
    tests = [r["test"] for r in runs if r["test"] and r["test"].get("n")]
    if not tests:
        return {}

    def mean_sd(key: str) -> tuple[float | None, float | None]:
        values = [t[key] for t in tests if t.get(key) is not None]
        if not values:
            return None, None
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    (acc, acc_sd), (auc, auc_sd) = mean_sd("accuracy"), mean_sd("macro_auc")
    return {"mode": mode, "accuracy_mean": acc, "accuracy_sd": acc_sd, "macro_auc_mean": auc, "macro_auc_sd": auc_sd,
            "n": tests[0]["n"], "best_epoch": [r["best_epoch"] for r in runs], "classes": runs[0]["classes"]}


def leakage_check(pretrain: list[str], prepared: dict[str, Path], progress: bool = True,
                  log: Callable[[str], None] = lambda _: None) -> dict:
    """``medmoe data leakage`` of the pretraining manifests against the prepared datasets: the verdict and,
    per dataset, its rows and the rows that share an image, patient or study with the pretraining data."""
    from ..data.leakage import find_leaks

    log(f"leakage check: {', '.join(map(str, pretrain))} against {len(prepared)} dataset(s)")
    report = find_leaks(pretrain, list(prepared.values()), progress=progress)
    name_of = {Path(m).resolve(): name for name, m in prepared.items()}
    leaked = {name: set() for name in prepared}
    for pair in report.pairs:
        leaked[name_of[Path(pair.benchmark).resolve()]].add(pair.benchmark_row)
    rows = {name: len(read_manifest(m).rows) for name, m in prepared.items()}
    for warning in report.warnings:
        log(f"leakage check: warning: {warning}")
    log(f"leakage check: {report.verdict}")
    return {"pretrain": [str(p) for p in pretrain], "verdict": report.verdict,
            "datasets": {name: {"rows": rows[name], "leaked": len(leaked[name])} for name in prepared}}


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
              ensemble: str = DEFAULT_ENSEMBLE, progress: bool = True, log: Callable[[str], None] = lambda _: None,
              finetune: str | None = None, leakage: list[str] | None = None) -> dict:
    """Tables 1 and 2 of ``model`` on every dataset of ``datasets`` (default: all) found under ``root``, and
    with ``finetune`` (a mode of ``medmoe finetune``) our fine-tuning table. ``seed`` makes the splits and
    samples the CheXpert prompts; ``seeds`` are the linear probe's and the fine-tuning's. ``leakage``: the
    pretraining manifests, checked against the prepared datasets first (``leakage_check``)."""
    root = Path(root)
    manifests = Path(manifests) if manifests else root / MANIFESTS
    result = {"root": str(root), "manifests": str(manifests), "scoring": scoring, "ensemble": ensemble,
              "seeds": list(seeds), "datasets": {}, "zeroshot": {}, "linear_probe": {}, "grounding": {}, "skipped": {}}
    if finetune:
        result.update(finetune_mode=finetune, finetune={}, finetune_skipped={})
    prepared = {}
    for name in [d for d in ADAPTERS if d in (datasets or ADAPTERS)]:
        try:
            prepared[name] = _manifest(name, root, manifests, seed, log)
        except DataError as exc:
            result["skipped"][name] = str(exc)
            log(f"{name}: skipped: {exc}")
    if leakage and prepared:
        result["leakage"] = leakage_check(leakage, prepared, progress, log)
    for name, manifest in prepared.items():
        result["datasets"][name] = str(manifest)
        if name in GROUNDING:
            log(f"{name}: grounding")
            scores = grounding_scores(model, read_manifest(manifest).split("test"), GROUNDING[name])
            if scores.get("n"):
                result["grounding"][name] = scores
            else:
                log(f"{name}: no grounding result (no test image with boxes or a mask)")
        if name not in DATASETS:
            continue
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
        if finetune:
            log(f"{name}: fine-tuning ({finetune}), {len(seeds)} seed(s)")
            try:
                tuned = finetune_dataset(model, manifest, finetune, seeds, progress, lambda line: log(f"{name}: {line}"))
            except DataError as exc:
                tuned, result["finetune_skipped"][name] = {}, str(exc)
                log(f"{name}: no fine-tuning: {exc}")
            if tuned:
                result["finetune"][name] = tuned
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
    skipped = {d: why for d, why in result["skipped"].items() if d in DATASETS}
    leaks = {d: r for d, r in result.get("leakage", {}).get("datasets", {}).items() if r["leaked"]}
    columns = [f"{d} †" if d in leaks else d for d in names]  # contaminated: marked in every table

    def cells(text: dict[str, str], skipped=()) -> list[str]:
        return ["skipped" if d in skipped else text.get(d, "-") for d in names]

    ours = {d: 100 * r["accuracy"] for d, r in result["zeroshot"].items()}
    theirs = paper["zeroshot"]
    avg = _average(names, ours, theirs)
    lines = [f"Table 1: zero-shot accuracy (%), {result['scoring']} scoring, {result['ensemble']} ensemble", "",
             *_table(["", *columns, "Avg."], [
                 ["ours", *cells({d: f"{v:.2f}" for d, v in ours.items()}, skipped), avg[0]],
                 [PAPER, *cells({d: f"{v:.2f}" for d, v in theirs.items()}), avg[1]]])]
    rows = []
    for f in map(str, FRACTIONS):
        probe = {d: r[f] for d, r in result["linear_probe"].items() if f in r}
        ours = {d: 100 * r["accuracy_mean"] for d, r in probe.items()}
        theirs = {d: r[f] for d, r in paper["linear_probe"].items()}
        avg = _average(names, ours, theirs)
        text = {d: f"{ours[d]:.2f} ± {100 * r['accuracy_sd']:.2f}" for d, r in probe.items()}
        label = f"{float(f):.0%}"
        rows += [[label, "ours", *cells(text, skipped), avg[0]],
                 [label, PAPER, *cells({d: f"{v:.2f}" for d, v in theirs.items()}), avg[1]]]
    lines += ["", f"Table 2: linear-probe accuracy (%), mean ± sd over {len(result['seeds'])} seeds", "",
              *_table(["labels", "", *columns, "Avg."], rows), "",
              f"Avg.: mean over the datasets both rows report. {PAPER}: {paper['_source']}."]
    if "leakage" in result:
        lines += ["", f"Leakage check against {', '.join(result['leakage']['pretrain'])}: {result['leakage']['verdict']}"]
        lines += [f"† {d}: {r['leaked']} of {r['rows']} rows share an image, patient or study with the pretraining "
                  "data (contaminated; `medmoe data leakage --json` lists the pairs)" for d, r in leaks.items()]
    if "finetune" in result:
        lines += ["", *finetune_table(result, names, columns)]
    lines += ["", *grounding_table(result)]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{d} ({why})" for d, why in result["skipped"].items())]
    return "\n".join(lines)


def finetune_table(result: dict, names: list[str], columns: list[str]) -> list[str]:
    """Our fine-tuning table (the paper has none): test accuracy (%) and macro AUC, mean ± sd over the seeds,
    beside our linear probe at 100 % of the labels."""
    tuned, skipped = result["finetune"], result["skipped"]
    probe = {d: r["1.0"] for d, r in result["linear_probe"].items() if "1.0" in r}

    def row(label: str, values: dict[str, tuple[float, float]], scale: float = 100, digits: int = 2) -> list[str]:
        cells = ["skipped" if d in skipped else
                 (f"{scale * values[d][0]:.{digits}f} ± {scale * values[d][1]:.{digits}f}" if d in values else "-")
                 for d in names]
        shared = [d for d in names if d in values]
        avg = f"{sum(scale * values[d][0] for d in shared) / len(shared):.{digits}f}" if shared else "-"
        return [label, *cells, avg]

    mode = result["finetune_mode"]
    rows = [row(f"fine-tuned ({mode}), accuracy %", {d: (r["accuracy_mean"], r["accuracy_sd"]) for d, r in tuned.items()
                                                     if r["accuracy_mean"] is not None}),
            row("linear probe 100 %, accuracy %", {d: (r["accuracy_mean"], r["accuracy_sd"]) for d, r in probe.items()}),
            row(f"fine-tuned ({mode}), macro AUC", {d: (r["macro_auc_mean"], r["macro_auc_sd"]) for d, r in tuned.items()
                                                    if r["macro_auc_mean"] is not None}, scale=1, digits=3)]
    lines = [f"Table F (ours; the paper has no fine-tuning table): medmoe finetune --mode {mode} on the train split, "
             f"early stopping on val, test split; mean ± sd over {len(result['seeds'])} seeds", "",
             *_table(["", *columns, "Avg."], rows)]
    if result.get("finetune_skipped"):
        lines += ["", "Not fine-tuned: " + "; ".join(f"{d} ({why})" for d, why in result["finetune_skipped"].items())]
    return lines


def grounding_table(result: dict) -> list[str]:
    """Table G (ours; the paper shows attention maps, no numbers): pointing game, attention in the boxes and
    CNR on each grounding dataset, a uniform map's scores in parentheses, published CNR beside MS-CXR's."""
    published = ", ".join(f"{name} {value:.2f}" for name, value in PUBLISHED_CNR.items())
    rows = []
    for name in GROUNDING:
        r = result.get("grounding", {}).get(name)
        if r is None:
            why = result["skipped"].get(name, "no test image with boxes" if name in result["datasets"] else "not run")
            rows.append([name, "-", "-", "-", "-", "-", f"skipped ({why})" if name in result["skipped"] else why])
            continue
        phrase = f'"{GROUNDING[name]}"' if GROUNDING[name] else "each row's phrase"
        rows.append([name, phrase, str(r["n"]), f"{r['pointing_game']:.3f} ({r['uniform_pointing_game']:.3f})",
                     f"{r['attention_in_mask']:.3f} ({r['uniform_attention_in_mask']:.3f})", f"{r['cnr']:.2f}",
                     published if name == "ms-cxr" else "-"])
    return ["Table G (ours): grounding on the test split's boxes; a uniform map's score in parentheses", "",
            *_table(["dataset", "phrase", "n", "pointing game", "attention in boxes", "CNR", "published CNR"], rows)]
