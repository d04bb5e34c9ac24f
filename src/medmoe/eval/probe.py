"""Linear probing (paper Table 2): logistic regression on frozen global image embeddings, trained on
1 %, 10 % and 100 % of the training split's labels, scored on the evaluation split, several seeds."""
from __future__ import annotations

import numpy as np

from .embed import Embeddings


def _labels(emb: Embeddings) -> list[str | None]:
    return [f"{r.modality}:{r.labels[0]}" if r.labels and r.modality else None for r in emb.rows]


def linear_probe_scores(train: Embeddings, test: Embeddings, fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2)) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_train, y_test = np.array(_labels(train), dtype=object), np.array(_labels(test), dtype=object)
    tr, te = y_train != None, y_test != None  # noqa: E711  (element-wise)
    x_train, y_train = train.image.numpy()[tr], y_train[tr]
    x_test, y_test = test.image.numpy()[te], y_test[te]
    out: dict = {"fractions": {}, "seeds": len(seeds), "n_test": int(len(y_test))}
    if len(set(y_train)) < 2 or not len(y_test):
        return out
    for fraction in fractions:
        accuracies, n = [], 0
        for seed in seeds:
            rng = np.random.default_rng(seed)
            n = max(len(set(y_train)), int(round(fraction * len(y_train))))
            pick = rng.permutation(len(y_train))[:n]
            if len(set(y_train[pick])) < 2:
                continue
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            clf.fit(x_train[pick], y_train[pick])
            accuracies.append(float((clf.predict(x_test) == y_test).mean()))
        if accuracies:
            out["fractions"][str(fraction)] = {"accuracy_mean": float(np.mean(accuracies)),
                                               "accuracy_std": float(np.std(accuracies)), "n_train": n}
    return out
