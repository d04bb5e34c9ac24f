"""A markdown report comparing evaluated variants (e.g. MedMoE against the static baseline).

``write_report`` reads each variant's ``medmoe eval all`` JSON and its training ``metrics.jsonl``
and writes ``report.md`` with: what was run, a side-by-side table per modality, the linear-probe
table, the routers' accuracy and expert load, loss curves, routing confusion matrices and any
extra figures (attention maps). Numbers are printed with 3 decimals; a missing number prints
"-". The only comparison the report makes is computed: the highest value among variants for
each metric and row is printed in bold.

matplotlib is imported inside the plotting functions, so importing this module stays light; figures are
drawn on ``matplotlib.figure.Figure`` (no pyplot state, the caller's backend untouched).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..runs import trained_steps

LOSSES = ("total", "global", "local", "aux")
SMOOTH = 5  # points in the running mean drawn over the raw loss
# (column name, path into the eval JSON from a per-modality / overall block)
METRICS = (
    ("ZS acc", ("zeroshot", "accuracy")),
    ("ZS AUC", ("zeroshot", "macro_auc")),
    ("i2t R@1", ("retrieval", "i2t_r1")),
    ("t2i R@1", ("retrieval", "t2i_r1")),
    ("LP acc 100%", ("linear_probe",)),
    ("PG (uniform)", ("grounding", "pointing_game")),
)


def _get(d, *keys):
    """``d[k1][k2]...``, or None where any level is missing."""
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _read_log(path) -> list[dict]:
    """The JSON lines of a metrics.jsonl; an absent file or unreadable line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _modalities(results: dict[str, dict]) -> list[str]:
    """Modalities in first-seen order: the routing list, then per-modality blocks."""
    seen = []
    for res in results.values():
        names = list(_get(res, "routing", "modalities") or [])
        for task in ("zeroshot", "retrieval", "grounding"):
            names += list(_get(res, task, "per_modality") or {})
        seen += [m for m in dict.fromkeys(names) if m not in seen]
    return seen


def _fractions(probe) -> dict[float, dict]:
    """Linear-probe blocks keyed by fraction as a float ("0.1" and "0.10" are the same row)."""
    out = {}
    for key, block in (_get(probe, "fractions") or {}).items():
        try:
            out[float(key)] = block
        except ValueError:
            continue
    return out


# ---------------------------------------------------------------- tables


def _metric(res: dict, modality: str, path: tuple[str, ...]):
    """One metric of one variant for a modality row ("all" = overall)."""
    task = path[0]
    if task == "linear_probe":  # overall only
        return _get(_fractions(res.get("linear_probe")).get(1.0), "accuracy_mean") if modality == "all" else None
    block = res.get(task) if modality == "all" else _get(res, task, "per_modality", modality)
    return _get(block, *path[1:])


def _bold_best(values: list) -> list[str]:
    """Formatted values, the single highest (3-decimal) one in bold when two or more are present."""
    cells = [_fmt(v) for v in values]
    present = [float(c) for c in cells if c != "-"]
    if len(present) >= 2 and present.count(max(present)) == 1:
        best = cells.index(_fmt(max(present)))
        cells[best] = f"**{cells[best]}**"
    return cells


def _modality_row(results: dict[str, dict], modality: str) -> list[str]:
    """Cells of one row, grouped by variant: for each variant, one cell per METRICS entry."""
    names = list(results)
    by_metric = []
    for label, path in METRICS:
        cells = _bold_best([_metric(results[v], modality, path) for v in names])
        if label.startswith("PG"):
            uniform = ("grounding", "uniform_pointing_game")
            cells = [f"{c} ({_fmt(_metric(results[v], modality, uniform))})" for c, v in zip(cells, names)]
        by_metric.append(cells)
    return [by_metric[m][v] for v in range(len(names)) for m in range(len(METRICS))]


def _row_n(results: dict[str, dict], modality: str) -> str:
    for res in results.values():
        n = res.get("n") if modality == "all" else _get(res, "zeroshot", "per_modality", modality, "n")
        if n is not None:
            return str(n)
    return "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def modality_table(results: dict[str, dict]) -> list[str]:
    """Rows = modalities then "all"; columns = each variant's METRICS, side by side."""
    header = ["modality", "n"] + [f"{v}: {label}" for v in results for label, _ in METRICS]
    rows = [[m, _row_n(results, m), *_modality_row(results, m)] for m in [*_modalities(results), "all"]]
    return _table(header, rows)


def probe_table(results: dict[str, dict]) -> list[str]:
    """Rows = label fractions; one "mean ± sd (n_train)" column per variant."""
    probes = {v: _fractions(res.get("linear_probe")) for v, res in results.items()}
    fractions = sorted({f for p in probes.values() for f in p})
    if not fractions:
        return ["No linear-probe results."]
    rows = []
    for f in fractions:
        means = _bold_best([_get(probes[v].get(f), "accuracy_mean") for v in results])
        row = [f"{f * 100:g} %"]
        for mean, v in zip(means, results):
            block = probes[v].get(f)
            sd, n = _get(block, "accuracy_sd"), _get(block, "n_train")
            row.append("-" if block is None else f"{mean} ± {_fmt(sd)} (n={'-' if n is None else n})")
        rows.append(row)
    return _table(["labelled fraction", *results], rows)


def _load(load) -> str:
    return "-" if not load else " / ".join(_fmt(x) for x in load)


def routing_table(results: dict[str, dict]) -> list[str]:
    """Per variant: number of experts, each router's accuracy and expert load."""
    rows = []
    for v, res in results.items():
        routing = res.get("routing") or {}
        row = [v, str(routing.get("num_experts", "-"))]
        for router in ("image", "text"):
            row += [_fmt(_get(routing, router, "accuracy")), _load(_get(routing, router, "load"))]
        rows.append(row)
    header = ["variant", "experts", "image router acc", "image load", "text router acc", "text load"]
    return _table(header, rows) + ["", *routing_modality_table(results)]


def routing_modality_table(results: dict[str, dict]) -> list[str]:
    """Per variant and router: the share of each modality's images sent to its own expert."""
    rows = []
    for v, res in results.items():
        routing = res.get("routing") or {}
        for router in ("image", "text"):
            per = _get(routing, router, "per_modality") or {}
            if per:
                rows.append([v, router, *(_fmt(per.get(m)) for m in routing["modalities"])])
    if not rows:
        return []
    modalities = next(r["routing"]["modalities"] for r in results.values() if (r.get("routing") or {}).get("image"))
    return _table(["variant", "router", *modalities], rows)


# ---------------------------------------------------------------- figures


def _running_mean(values: np.ndarray, k: int = SMOOTH) -> np.ndarray:
    """Mean of each point and up to k-1 points before it (same length as values)."""
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - k, 0)
    return (csum[idx] - csum[start]) / (idx - start)


def plot_loss_curves(logs: dict[str, str | Path], out: Path) -> Path | None:
    """2x2 train losses vs step, one colour per variant (thin: raw; thick: running mean)."""
    from matplotlib.figure import Figure

    train = {v: sorted((r for r in _read_log(p) if r.get("split") == "train" and "step" in r),
                       key=lambda r: r["step"]) for v, p in logs.items()}
    train = {v: rows for v, rows in train.items() if rows}
    if not train:
        return None
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2)
    for ax, loss in zip(axes.ravel(), LOSSES):
        for colour, (variant, rows) in enumerate(train.items()):
            points = [(r["step"], r[loss]) for r in rows if r.get(loss) is not None]
            if not points:
                continue
            steps, values = np.array(points, dtype=float).T
            ax.plot(steps, values, color=f"C{colour}", alpha=0.3, linewidth=0.8)
            ax.plot(steps, _running_mean(values), color=f"C{colour}", linewidth=1.8, label=variant)
        ax.set_title(f"{loss} loss")
        ax.set_xlabel("step")
        if ax.has_data():
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


CURVES = {"zeroshot_acc": "zero-shot accuracy", "i2t_r1": "image-to-text R@1", "t2i_r1": "text-to-image R@1",
          "routing_acc_image": "image router accuracy"}


def plot_learning_curves(logs: dict[str, str | Path], out: Path) -> Path | None:
    """The held-out scores logged at each evaluation while training vs step, one line per variant; None
    unless some run carries at least two evaluations."""
    from matplotlib.figure import Figure

    val = {v: [r for r in _read_log(p) if r.get("split") == "val" and "step" in r] for v, p in logs.items()}
    if max((len(rows) for rows in val.values()), default=0) < 2:
        return None
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, len(CURVES))
    for ax, key in zip(axes, CURVES):
        for colour, (variant, rows) in enumerate(val.items()):
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", color=f"C{colour}", label=variant)
    return _save_vs_step(fig, zip(axes, CURVES.values()), out)


def _save_vs_step(fig, titled_axes, out: Path, legend_size: int = 8) -> Path:
    """Title each axis (x: step, a legend when it has data) and save the figure to ``out``."""
    for ax, title in titled_axes:
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if ax.has_data():
            ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def plot_routing_stats(logs: dict[str, str | Path], out: Path) -> Path | None:
    """The gate's statistics logged while training (``route_*`` in metrics.jsonl) vs step: each expert's
    load, each router's entropy and its accuracy against the modality label. None without any."""
    from matplotlib.figure import Figure

    train = {v: [r for r in _read_log(p) if r.get("split") == "train" and "route_load" in r] for v, p in logs.items()}
    train = {v: rows for v, rows in train.items() if rows}
    if not train:
        return None
    fig = Figure(figsize=(13, 3.8))
    load_ax, entropy_ax, accuracy_ax = fig.subplots(1, 3)
    for colour, (variant, rows) in enumerate(train.items()):
        steps = [r["step"] for r in rows]
        loads = np.array([r["route_load"] for r in rows])
        for k in range(loads.shape[1]):
            load_ax.plot(steps, loads[:, k], color=f"C{colour}", linestyle=("-", "--", ":", "-.")[k % 4],
                         label=f"{variant}: expert {k}")
        for ax, key in ((entropy_ax, "route_entropy"), (accuracy_ax, "route_accuracy")):
            for side, style in (("image", "-"), ("text", "--")):
                points = [(r["step"], r[f"{key}_{side}"]) for r in rows if f"{key}_{side}" in r]
                if points:
                    ax.plot(*zip(*points), color=f"C{colour}", linestyle=style, label=f"{variant}: {side} router")
    return _save_vs_step(fig, ((load_ax, "share of samples per expert"), (entropy_ax, "router entropy (nats)"),
                               (accuracy_ax, "router accuracy vs modality label")), out, legend_size=7)


def _confusion_panel(ax, matrix: np.ndarray, modalities: list[str], title: str) -> None:
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(col, row, f"{count:g}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(range(matrix.shape[1]))
    ax.set_xlabel("expert")
    ax.set_yticks(range(matrix.shape[0]))
    ax.set_yticklabels(modalities[:matrix.shape[0]] + [""] * (matrix.shape[0] - len(modalities)))
    ax.set_ylabel("modality")
    ax.set_title(title, fontsize=10)


def plot_routing(results: dict[str, dict], out: Path) -> Path | None:
    """Confusion matrices (modality rows x expert columns) of each router: one row per variant."""
    from matplotlib.figure import Figure

    panels = {v: [r for r in ("image", "text") if _get(res, "routing", r, "confusion")]
              for v, res in results.items()}
    panels = {v: routers for v, routers in panels.items() if routers}
    if not panels:
        return None
    cols = max(len(r) for r in panels.values())
    fig = Figure(figsize=(4.2 * cols, 3.8 * len(panels)))
    axes = fig.subplots(len(panels), cols, squeeze=False)
    for ax_row, (variant, routers) in zip(axes, panels.items()):
        routing = results[variant]["routing"]
        for ax, router in zip(ax_row, routers):
            matrix = np.asarray(routing[router]["confusion"], dtype=float)
            title = f"{variant}: {router} router (acc {_fmt(_get(routing, router, 'accuracy'))})"
            _confusion_panel(ax, matrix, list(routing.get("modalities", [])), title)
        for ax in ax_row[len(routers):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def _copy_figures(figures, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Figures copied into out_dir (kept in place if already there); and the missing ones."""
    copied, missing = [], []
    for i, fig in enumerate(map(Path, figures)):
        if not fig.is_file():
            missing.append(str(fig))
            continue
        dest = out_dir / fig.name
        if dest.exists() and not dest.samefile(fig):
            dest = out_dir / f"{i}_{fig.name}"
        if not dest.exists():
            shutil.copy2(fig, dest)
        copied.append(dest)
    return copied, missing


# ---------------------------------------------------------------- report


def _what_was_run(results: dict[str, dict]) -> str:
    parts = []
    for v, res in results.items():
        model = f" from `{res['model']}`" if res.get("model") else ""
        parts.append(f"`{v}`{model} ({res.get('n', '-')} images of the `{res.get('split', '-')}` split)")
    return ("Evaluated variants: " + "; ".join(parts) + ". Metrics: zero-shot classification, "
            "image-text retrieval, linear probe, routing and word grounding, as computed by `medmoe eval all`.")


HEADLINE = {"zero-shot accuracy": ("zeroshot", "accuracy"),
            "linear probe (100 %)": ("linear_probe", "fractions", "1.0", "accuracy_mean")}


def headline(results: dict[str, dict], first: str = "medmoe", second: str = "static") -> str:
    """One plain sentence per headline metric: which of ``first`` and ``second`` scored higher in this run
    ("" when the run does not hold both)."""
    if first not in results or second not in results:
        return ""
    said = []
    for name, path in HEADLINE.items():
        a, b = _get(results[first], *path), _get(results[second], *path)
        if a is None or b is None:
            continue
        verdict = "level with" if a == b else ("ahead of" if a > b else "**behind**")
        said.append(f"`{first}` is {verdict} `{second}` on {name} ({_fmt(a)} against {_fmt(b)})")
    return ("In this run, " + "; ".join(said) + ". One seed: `benchmarks/ablation.py` measures the gap over "
            "seeds and budgets (benchmarks/RESULTS.md, \"Do the experts earn their place?\").") if said else ""


def _steps(path) -> int | None:
    """Steps a run trained, from its newest checkpoint (the run folder holds ``path``, its metrics.jsonl),
    else from the last train step logged; None without either."""
    logged = [r["step"] for r in _read_log(path) if r.get("split") == "train" and "step" in r]
    checkpointed = trained_steps(Path(path).parent)
    return checkpointed if checkpointed is not None else max(logged, default=None)


def _budget(steps: dict[str, int | None]) -> str:
    """Whether the variants trained the same number of steps (the only fair comparison)."""
    known = {v: s for v, s in steps.items() if s is not None}
    if len(known) < 2:
        return ""
    if len(set(known.values())) == 1:
        return f"Every variant trained the same number of steps: {next(iter(known.values()))}."
    return ("**Unequal budgets**: " + ", ".join(f"`{v}` {s}" for v, s in known.items())
            + " steps; differences between variants may come from the budget.")


def _log_summary(logs: dict[str, str | Path]) -> list[str]:
    """Whether the budgets were equal, then one line per variant: steps trained and the last validation retrieval."""
    steps = {v: _steps(path) for v, path in logs.items()}
    budget = _budget(steps)
    lines = [budget, ""] if budget else []
    for v, path in logs.items():
        val = [r for r in _read_log(path) if r.get("split") == "val"]
        if steps[v] is None:
            lines.append(f"- `{v}`: no training log at `{path}`.")
            continue
        text = f"- `{v}`: {steps[v]} steps"
        if val:
            last = val[-1]
            text += (f"; last validation (step {last.get('step', '-')}, n={last.get('n', '-')}): "
                     f"i2t R@1 {_fmt(last.get('i2t_r1'))}, t2i R@1 {_fmt(last.get('t2i_r1'))}, "
                     f"chance R@1 {_fmt(last.get('chance_r1'))}")
        lines.append(text + ".")
    return lines


def write_report(out_dir, results: dict[str, dict], logs: dict[str, str | Path],
                 figures: list[str | Path] = (), notes: str = "") -> Path:
    """Write ``out_dir/report.md`` (plus loss_curves.png, learning_curves.png, routing_confusion.png,
    routing_training.png); returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# MedMoE evaluation report", "", _what_was_run(results), ""]
    if said := headline(results):
        lines += [said, ""]

    lines += ["## Results per modality", "",
              "ZS = zero-shot classification, R@1 = retrieval recall@1 within the modality, "
              "LP = linear probe with 100 % of the labels (overall only), PG = pointing game "
              "(a uniform attention map's value in parentheses). **Bold**: highest among variants "
              "for that metric and row.", ""]
    lines += modality_table(results) + [""]

    lines += ["## Linear probe", "", "Accuracy, mean ± sd over seeds; n = labelled training images.", ""]
    lines += probe_table(results) + [""]

    lines += ["## Routing", "", "Router accuracy = share of images (reports) sent to their modality's expert; "
              "load = share of inputs per expert.", ""]
    lines += routing_table(results) + [""]
    if plot_routing(results, out_dir / "routing_confusion.png"):
        lines += ["![Routing confusion matrices](routing_confusion.png)", "",
                  "Rows: true modality; columns: expert chosen; counts annotated.", ""]

    lines += ["## Training", ""] + _log_summary(logs) + [""]
    if plot_loss_curves(logs, out_dir / "loss_curves.png"):
        lines += ["![Training losses](loss_curves.png)", "",
                  f"Train losses vs step: thin lines raw, thick lines a running mean over {SMOOTH} logged points.", ""]
    if plot_learning_curves(logs, out_dir / "learning_curves.png"):
        lines += ["![Learning curves](learning_curves.png)", "",
                  "Held-out scores at each evaluation while training (the val split), one line per variant.", ""]
    if plot_routing_stats(logs, out_dir / "routing_training.png"):
        lines += ["![Routing while training](routing_training.png)", "",
                  "The gate while training, averaged over the steps between logged lines: each expert's share of "
                  "the samples (dispatch), each router's entropy and its accuracy against the modality label.", ""]

    copied, missing = _copy_figures(figures, out_dir)
    if copied or missing:
        lines += ["## Attention maps", ""]
        lines += [f"![{fig.stem}]({fig.name})\n" for fig in copied]
        lines += [f"- figure not found: `{path}`" for path in missing]
        lines += [""]

    if notes:
        lines += ["## Notes", "", notes.strip(), ""]

    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
