"""The paper's linear-probe protocol (stratified subsets, C chosen on validation, mean ± sd over seeds)
and evaluation keyed by dataset: classes of different datasets are never pooled."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medmoe.data.manifest import Row
from medmoe.eval.embed import Embeddings
from medmoe.eval.probe import C_GRID, DEFAULT_C, fit_probe, linear_probe_scores, stratified_subset
from medmoe.eval.zeroshot import embed_prompts, zeroshot_scores


def embeddings(image, labels, datasets=None, modality="ultrasound"):
    datasets = datasets or [None] * len(labels)
    rows = [Row(i + 1, Path(f"{i}.png"), "r", modality, "test", [label], dataset=d)
            for i, (label, d) in enumerate(zip(labels, datasets))]
    return Embeddings(rows, image, image, None, None, torch.zeros(len(rows), dtype=torch.long))


def blobs(labels, centers, noise, seed):
    g = torch.Generator().manual_seed(seed)
    index = [sorted(centers).index(label) for label in labels]
    return torch.stack([centers[k] for k in sorted(centers)])[index] + noise * torch.randn(len(labels), 4, generator=g)


def test_stratified_subset_keeps_every_class_in_proportion():
    y = np.array(["a"] * 300 + ["b"] * 100 + ["c"] * 3)
    for seed in range(3):
        pick = stratified_subset(y, 0.01, np.random.default_rng(seed))
        assert {c: int((y[pick] == c).sum()) for c in "abc"} == {"a": 3, "b": 1, "c": 1}
    ten = stratified_subset(y, 0.1, np.random.default_rng(0))
    assert {c: int((y[ten] == c).sum()) for c in "abc"} == {"a": 30, "b": 10, "c": 1}
    assert len(set(ten)) == len(ten) and not np.array_equal(ten, stratified_subset(y, 0.1, np.random.default_rng(1)))


def test_c_is_chosen_on_the_validation_split():
    """Imbalanced training data: the strongest regularisation predicts the majority class everywhere; the
    balanced validation split picks a weaker one, which also scores better on the test split."""
    rng = np.random.default_rng(0)
    y = np.array(["a"] * 90 + ["b"] * 10)
    x = np.where(y[:, None] == "a", 1.0, -1.0) * np.array([1.0, 0, 0]) + rng.normal(0, 0.3, (100, 3))
    y_val = np.array(["a", "b"] * 20)
    x_val = np.where(y_val[:, None] == "a", 1.0, -1.0) * np.array([1.0, 0, 0]) + rng.normal(0, 0.3, (40, 3))
    clf, c = fit_probe(x, y, x_val, y_val)
    strong, c_strong = fit_probe(x, y, x_val, y_val, grid=(C_GRID[0],))
    assert c in C_GRID and c > C_GRID[0] and c_strong == C_GRID[0]
    assert (clf.predict(x_val) == y_val).mean() > (strong.predict(x_val) == y_val).mean()
    assert fit_probe(x, y, x_val[:0], y_val[:0])[1] == DEFAULT_C  # no validation split


def test_probe_reports_mean_sd_over_seeds_and_chosen_c():
    centers = {"a": torch.tensor([2.0, 0, 0, 0]), "b": torch.tensor([0, 2.0, 0, 0]), "c": torch.tensor([0, 0, 2.0, 0])}
    labels = ["a", "b", "c"] * 40
    train = embeddings(blobs(labels, centers, 1.5, 0), labels)
    val, test = (embeddings(blobs(labels[:30], centers, 1.5, s), labels[:30]) for s in (1, 2))
    out = linear_probe_scores(train, test, val, seeds=(0, 1, 2))
    assert set(out["fractions"]) == {"0.01", "0.1", "1.0"} and out["per_modality"]["ultrasound"]["n_test"] == 30
    assert out["fractions"]["0.01"]["n_train"] == 3 and out["fractions"]["1.0"]["n_train"] == 120  # 1 per class
    single = [linear_probe_scores(train, test, val, fractions=(0.1,), seeds=(s,))["fractions"]["0.1"]["accuracy_mean"]
              for s in range(3)]
    block = out["fractions"]["0.1"]
    assert block["accuracy_mean"] == pytest.approx(np.mean(single))
    assert block["accuracy_sd"] == pytest.approx(np.std(single, ddof=1)) and block["accuracy_sd"] > 0
    chosen = out["per_modality"]["ultrasound"]["fractions"]["1.0"]["C"]
    assert len(chosen) == 3 and set(chosen) <= set(C_GRID)


def test_probe_never_pools_classes_of_two_datasets():
    """Same class names, opposite meaning: one pooled classifier is at chance, one per dataset is right."""
    a, b = torch.tensor([3.0, 0, 0, 0]), torch.tensor([-3.0, 0, 0, 0])
    labels = ["benign", "malignant"] * 20
    datasets = ["thyroid-us"] * 20 + ["breast-us"] * 20

    def image(seed):
        return torch.cat([blobs(labels[:20], {"benign": a, "malignant": b}, 0.3, seed),
                          blobs(labels[20:], {"benign": b, "malignant": a}, 0.3, seed + 1)])

    train, test = image(0), image(2)
    out = linear_probe_scores(embeddings(train, labels, datasets), embeddings(test, labels, datasets), seeds=(0,))
    assert set(out["per_dataset"]) == {"thyroid-us", "breast-us"} and "per_modality" not in out
    assert out["fractions"]["1.0"]["accuracy_mean"] == 1.0
    pooled = linear_probe_scores(embeddings(train, labels), embeddings(test, labels), seeds=(0,))
    assert pooled["fractions"]["1.0"]["accuracy_mean"] <= 0.6


def test_zeroshot_scores_each_row_against_its_own_dataset():
    """Two ultrasound datasets with the same class names: grouped by modality they would collide."""
    code = {"thyroid nodule benign": 0, "thyroid nodule malignant": 1, "breast mass benign": 2, "breast mass malignant": 3}

    def encode_text(prompts):
        g = torch.stack([torch.eye(4)[code[p]] for p in prompts])
        return SimpleNamespace(global_emb=g, words=g[:, None], lengths=torch.ones(len(prompts), dtype=torch.long))

    groups = {d: {c: [f"{organ} {c}"] for c in ("benign", "malignant")}
              for d, organ in (("thyroid-us", "thyroid nodule"), ("breast-us", "breast mass"))}
    bank = embed_prompts(SimpleNamespace(encode_text=encode_text), groups)
    labels = ["benign", "malignant", "malignant", "benign", "malignant", "benign"]
    datasets = ["thyroid-us"] * 3 + ["breast-us"] * 3
    image = torch.eye(4)[[0, 1, 1, 2, 3, 2]] + 0.01
    out = zeroshot_scores(embeddings(image, labels, datasets), bank, "global")
    assert out["accuracy"] == 1.0 and out["n"] == 6 and out["per_modality"] == {}
    assert {d: m["n"] for d, m in out["per_dataset"].items()} == {"thyroid-us": 3, "breast-us": 3}
