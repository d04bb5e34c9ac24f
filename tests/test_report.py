"""Attention-map figures (eval.explain) and the markdown report (eval.report)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from medmoe.eval.explain import explain_figure, rank_words
from medmoe.eval.report import write_report

MODALITIES = ["xray", "ct", "mri", "ultrasound"]


def _attention(tokens, peaked, grid=7):
    """Uniform maps, except a sharp peak for the words in ``peaked`` (word -> height)."""
    maps = np.full((len(tokens), grid, grid), 1.0 / grid**2)
    for i, word in enumerate(tokens):
        if word in peaked:
            maps[i] = (1 - peaked[word]) / (grid**2 - 1)
            maps[i, 2, 3] = peaked[word]
    return maps


def test_rank_words_peaked_first_and_skips_stop_words():
    tokens = ["there", "is", "a", "small", "effusion", "in", "the", "left", "lung", "effusion"]
    maps = _attention(tokens, {"the": 0.9, "effusion": 0.5, "lung": 0.7})
    maps[9, 2, 3] = 0.95  # second "effusion": more peaked than the first, and kept instead
    order = [tokens[i] for i in rank_words(tokens, maps, max_words=8)]
    assert order[:2] == ["effusion", "lung"] and 9 in rank_words(tokens, maps)
    assert order[2:] == ["small", "left"]  # uniform words after, in report order
    assert "the" not in order and order.count("effusion") == 1
    assert len(rank_words(tokens, maps, max_words=1)) == 1


def test_explain_figure_draws_each_map_at_a_readable_size_and_says_where_its_peak_is(tmp_path):
    """A 64 x 48 image is shown enlarged, each panel some 448 pixels tall, not as a thumbnail; with the
    finding's mask, each panel says whether its map's peak lies inside it."""
    image = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    mask = np.zeros((64, 48), bool)
    mask[10:30, 10:30] = True
    inside, outside = np.zeros((8, 6)), np.zeros((8, 6))
    inside[2, 2], outside[7, 5] = 1.0, 1.0
    out = explain_figure(image, [("consolidation", inside), ("lobe", outside)], tmp_path / "sub" / "attn.png",
                         expert=2, title="case 1", mask=mask)
    with Image.open(out) as png:
        width, height = png.size
    assert out.exists() and width >= 3 * 300 and 420 <= height < 800  # one row: the image and two maps
    with pytest.raises(ValueError):
        explain_figure(np.zeros((3, 8, 8)), [("x", inside)], tmp_path / "bad.png")
    import matplotlib.figure

    captions = []
    original = matplotlib.axes.Axes.set_xlabel
    try:
        matplotlib.axes.Axes.set_xlabel = lambda ax, text, **kw: captions.append(text) or original(ax, text, **kw)
        explain_figure(image, [("consolidation", inside), ("lobe", outside)], tmp_path / "b.png", mask=mask)
    finally:
        matplotlib.axes.Axes.set_xlabel = original
    assert captions == ["max 1.000, peak in the finding", "max 1.000, peak outside the finding"]


def test_figures_leave_the_backend_alone(tmp_path):
    """Library figures draw on matplotlib.figure.Figure: the caller's backend is not switched."""
    import matplotlib

    with matplotlib.rc_context({"backend": "pdf"}):
        png = explain_figure(np.zeros((32, 32)), [("effusion", np.full((4, 4), 1 / 16))], tmp_path / "a.png")
        write_report(tmp_path, {"medmoe": _variant(0.6, routing=True)}, {"medmoe": _log(tmp_path / "m.jsonl", 0.0)})
        assert matplotlib.rcParams["backend"] == "pdf"
    for path in (png, tmp_path / "loss_curves.png", tmp_path / "routing_confusion.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100


def _variant(base: float, routing: bool) -> dict:
    """A fake ``medmoe eval all`` result; per-modality values base + 0.01 * index."""
    def per(keys, n):
        return {m: {**{k: base + 0.01 * i for k in keys}, "n": n} for i, m in enumerate(MODALITIES)}

    ret_keys = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]
    result = {
        "split": "test", "n": 290, "model": "runs/x", "variant": "v",
        "zeroshot": {"accuracy": base, "balanced_accuracy": base, "macro_auc": base + 0.1, "n": 290,
                     "per_modality": per(["accuracy", "balanced_accuracy", "macro_auc"], 70)},
        "retrieval": {**{k: base / 10 for k in ret_keys}, "n": 290, "per_modality": per(ret_keys, 70)},
        "linear_probe": {"seeds": 3, "fractions": {
            "0.01": {"accuracy_mean": base - 0.2, "accuracy_sd": 0.05, "n_train": 24},
            "0.1": {"accuracy_mean": base - 0.1, "accuracy_sd": 0.04, "n_train": 240},
            "1.0": {"accuracy_mean": base + 0.05, "accuracy_sd": 0.01, "n_train": 2400}}},
        "routing": {"modalities": MODALITIES, "num_experts": 0},
        "grounding": {"pointing_game": 0.35, "attention_in_mask": 0.2, "uniform_pointing_game": 0.05,
                      "uniform_attention_in_mask": 0.05, "n": 300},
    }
    if routing:
        confusion = (np.eye(4) * 70).astype(int).tolist()
        confusion[1][2] = 1
        result["routing"].update(num_experts=4, image={"accuracy": 0.98, "confusion": confusion,
                                                       "load": [0.24, 0.25, 0.25, 0.26],
                                                       "per_modality": {"xray": 1.0, "ct": 70 / 71, "mri": 1.0,
                                                                        "ultrasound": 1.0}},
                                 text={"accuracy": 1.0, "confusion": confusion, "load": [0.25] * 4})
    return result


def _log(path, offset, routed=False):
    route = {"route_load": [0.25] * 4, "route_entropy_image": 1.2, "route_entropy_text": 0.9,
             "route_accuracy_image": 0.8, "route_accuracy_text": 0.95} if routed else {}
    lines = [{"step": s, "split": "train", "global": 5 - s / 100 + offset, "local": 8.0, "aux": 2.0,
              "total": 15 - s / 50, **route} for s in range(10, 210, 10)]
    lines += [{"step": step, "split": "val", "n": 285, "chance_r1": 0.0035, "i2t_r1": 0.014, "t2i_r1": 0.02,
               "zeroshot_acc": 0.3 + step / 1000} for step in (100, 200)]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def _row(report: str, first_cell: str) -> str:
    return next(line for line in report.splitlines() if line.startswith(f"| {first_cell} |"))


def test_write_report(tmp_path):
    results = {"medmoe": _variant(0.6, routing=True), "static": _variant(0.5, routing=False)}
    logs = {"medmoe": _log(tmp_path / "m.jsonl", 0.0, routed=True), "static": _log(tmp_path / "s.jsonl", 0.3)}
    attention_png = tmp_path / "figs" / "attn_0.png"
    explain_figure(np.zeros((32, 32)), [("effusion", np.full((4, 4), 1 / 16))], attention_png, expert=0)

    path = write_report(tmp_path / "report", results, logs, figures=[attention_png, tmp_path / "gone.png"])
    report = path.read_text()

    assert sum(line.startswith("| xray |") for line in report.splitlines()) == 1
    ct = _row(report, "ct")  # index 1: medmoe 0.610, static 0.510
    assert "**0.610**" in ct and "0.510" in ct and ct.index("0.610") < ct.index("0.510")
    overall = _row(report, "all")
    assert "**0.650**" in overall and "0.550" in overall  # linear probe at 100 %, overall only
    assert "0.350 (0.050)" in overall
    assert "- (-)" in _row(report, "xray")  # the fake results have no per-modality grounding
    assert "**0.400** ± 0.050 (n=24)" in _row(report, "1 %") and "0.300 ± 0.050" in _row(report, "1 %")
    assert "0.980" in _row(report, "medmoe") and "| static | 0 | - |" in report
    assert "| medmoe | image | 1.000 | 0.986 | 1.000 | 1.000 |" in report  # each modality's routing accuracy
    assert "figure not found" in report
    assert report.splitlines()[4].startswith("In this run, `medmoe` is ahead of `static` on zero-shot accuracy")
    for name in ("loss_curves.png", "learning_curves.png", "routing_training.png", "routing_confusion.png",
                 "attn_0.png"):
        assert f"]({name})" in report
        with Image.open(path.parent / name) as png:
            assert png.size[0] > 100


def test_write_report_missing_keys(tmp_path):
    results = {"medmoe": {"split": "test", "zeroshot": {"accuracy": 0.5}}, "static": {}}
    path = write_report(tmp_path, results, logs={"medmoe": tmp_path / "absent.jsonl"})
    report = path.read_text()
    assert "0.500" in _row(report, "all") and "| - |" in _row(report, "all")
    assert "No linear-probe results." in report and "no training log" in report
    assert not (tmp_path / "loss_curves.png").exists()


def test_report_flags_unequal_budgets(tmp_path):
    results = {"medmoe": _variant(0.6, routing=True), "static": _variant(0.5, routing=False)}
    short = tmp_path / "s.jsonl"
    short.write_text("\n".join(line for line in _log(short, 0.3).read_text().splitlines()
                               if json.loads(line)["step"] <= 60) + "\n")
    report = write_report(tmp_path / "r", results, {"medmoe": _log(tmp_path / "m.jsonl", 0.0), "static": short})
    text = report.read_text()
    assert "**Unequal budgets**: `medmoe` 200, `static` 60 steps" in text and "same number of steps" not in text
    equal = write_report(tmp_path / "e", results, {"medmoe": tmp_path / "m.jsonl", "static": tmp_path / "m.jsonl"})
    assert "Every variant trained the same number of steps: 200." in equal.read_text()


def test_report_says_plainly_which_variant_scored_higher():
    from medmoe.eval.report import headline

    ahead, behind = _variant(0.6, routing=True), _variant(0.5, routing=False)
    text = headline({"medmoe": ahead, "static": behind})
    assert "`medmoe` is ahead of `static` on zero-shot accuracy (0.600 against 0.500)" in text
    assert "on linear probe (100 %) (0.650 against 0.550)" in text
    text = headline({"medmoe": behind, "static": ahead})
    assert "`medmoe` is **behind** `static` on zero-shot accuracy (0.500 against 0.600)" in text
    assert "ablation.py" in text
    assert headline({"medmoe": ahead}) == "" and headline({"medmoe": {}, "static": {}}) == ""
