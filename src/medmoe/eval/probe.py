"""Linear probing (paper Table 2, Sec. 5.3): logistic regression on frozen global image embeddings.

As the paper: 1 %, 10 % and 100 % of the training split's labels, in stratified subsets (each class
in proportion, at least one image per class); several seeds, reported as mean ± sd (sample sd over the
seeds); the inverse regularisation C chosen on the validation split from ``C_GRID`` (the C with the best
validation accuracy, the first in grid order on ties; without a validation split C = 1). One classifier per group
(``Row.group``: the dataset, else the modality), so classes of different datasets are never pooled; the
overall accuracy counts every test image under its own group's classifier.
"""
from __future__ import annotations

import numpy as np

from .embed import Embeddings

FRACTIONS = (0.01, 0.1, 1.0)
SEEDS = (0, 1, 2)
C_GRID = tuple(10.0**k for k in range(-3, 4))
DEFAULT_C = 1.0  # when there is no validation split to choose on


def _groups(emb: Embeddings) -> dict[str, list[int]]:
    """Group -> indices of the rows with a label."""
    out: dict[str, list[int]] = {}
    for i, r in enumerate(emb.rows):
        if r.labels and r.group:
            out.setdefault(r.group, []).append(i)
    return out


def _part(emb: Embeddings | None, index: list[int]) -> tuple[np.ndarray, np.ndarray]:
    if emb is None or not index:
        return np.empty((0, 0)), np.array([], dtype=object)
    return emb.image.numpy()[index], np.array([emb.rows[i].labels[0] for i in index], dtype=object)


def stratified_subset(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``fraction`` of each class of ``y`` (rounded, at least one per class), sorted."""
    pick = []
    for cls in sorted(set(y)):
        members = np.flatnonzero(y == cls)
        k = max(1, int(round(fraction * len(members))))
        pick.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(pick))


def fit_probe(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, grid=C_GRID):
    """(classifier, C): a standardised logistic regression fitted on (x, y) with each C of ``grid`` (in
    order, each fit starting from the last: the regularisation path), kept for the best accuracy on
    (x_val, y_val); with no validation rows, C = ``DEFAULT_C``."""
    from copy import deepcopy

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf, best = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, warm_start=True)), None
    for c in grid if len(y_val) else (DEFAULT_C,):
        clf.set_params(logisticregression__C=c).fit(x, y)
        score = float((clf.predict(x_val) == y_val).mean()) if len(y_val) else 0.0
        if best is None or score > best[0]:
            best = (score, deepcopy(clf), c)
    return best[1], best[2]


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _probe_group(train, val, test, fractions, seeds, grid, progress: str | None = None) -> dict:
    """Per fraction: correct test predictions, chosen C and n_train of each seed; ``progress``: a bar's label."""
    from tqdm.auto import tqdm

    (x, y), (x_val, y_val), (x_test, y_test) = train, val, test
    out: dict[str, list] = {str(f): [] for f in fractions}
    with tqdm(total=len(fractions) * len(seeds), desc=progress, unit="seed", disable=progress is None,
              leave=False) as bar:
        for fraction in fractions:
            for seed in seeds:
                pick = stratified_subset(y, fraction, np.random.default_rng(seed))
                clf, c = fit_probe(x[pick], y[pick], x_val, y_val, grid)
                out[str(fraction)].append({"correct": int((clf.predict(x_test) == y_test).sum()), "C": c,
                                           "n_train": len(pick)})
                bar.update()
    return out


def _summary(runs: list[dict], n_test: int) -> dict:
    mean, sd = _mean_sd([r["correct"] / n_test for r in runs])
    return {"accuracy_mean": mean, "accuracy_sd": sd, "C": [r["C"] for r in runs], "n_train": runs[0]["n_train"]}


def linear_probe_scores(train: Embeddings, test: Embeddings, val: Embeddings | None = None, fractions=FRACTIONS,
                        seeds=SEEDS, grid=C_GRID, progress: bool = False) -> dict:
    """``fractions`` -> accuracy mean ± sd over ``seeds``, the C chosen per seed and n_train, overall
    (``fractions``) and per group (``per_dataset`` / ``per_modality``); a group needs two classes in
    its training split and test rows."""
    train_groups, val_groups, test_groups = _groups(train), _groups(val) if val is not None else {}, _groups(test)
    out: dict = {"seeds": len(seeds), "C_grid": list(grid), "n_test": 0, "fractions": {}}
    runs: dict[str, dict] = {}
    for group, index in test_groups.items():
        x, y = _part(train, train_groups.get(group, []))
        if len(set(y)) < 2:
            continue
        runs[group] = _probe_group((x, y), _part(val, val_groups.get(group, [])), _part(test, index), fractions,
                                   seeds, grid, f"linear probe {group}" if progress else None)
        key = "per_dataset" if test.rows[index[0]].dataset else "per_modality"
        out.setdefault(key, {})[group] = {"n_test": len(index), "fractions": {
            f: _summary(r, len(index)) for f, r in runs[group].items()}}
        out["n_test"] += len(index)
    for f in map(str, fractions) if runs else ():
        per_seed = [[g[f][s] for g in runs.values()] for s in range(len(seeds))]
        accuracy = [sum(r["correct"] for r in seed) / out["n_test"] for seed in per_seed]
        mean, sd = _mean_sd(accuracy)
        out["fractions"][f] = {"accuracy_mean": mean, "accuracy_sd": sd,
                               "n_train": sum(r["n_train"] for r in per_seed[0])}
    return out
