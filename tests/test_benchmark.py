"""``medmoe benchmark``: Tables 1 and 2 from the fixtures of every benchmark dataset, with the tiny preset."""
import json

import pytest

from medmoe.cli import main
from medmoe.data.benchmarks import DATASETS
from medmoe.eval.benchmark import PAPER, paper_results, tables

from fixtures_benchmarks import write_benchmark_root, write_busi


def _row(text: str, first: str, second: str | None = None) -> list[str]:
    """Cells of the table row starting with ``first`` (and ``second``)."""
    for line in (line for line in text.splitlines() if line.startswith("|")):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == first and (second is None or cells[1] == second):
            return cells
    raise AssertionError(f"no row {first} {second or ''}")


def test_paper_numbers_are_the_tables_and_in_their_column_order():
    paper = paper_results()
    assert list(paper["zeroshot"]) == list(DATASETS)  # Table 1's columns, in order
    assert sum(paper["zeroshot"].values()) / 9 == pytest.approx(paper["zeroshot_average"], abs=0.005)
    assert list(paper["linear_probe"]) == [d for d in DATASETS if d in paper["linear_probe"]]
    assert paper["linear_probe"]["rsna-pneumonia"] == {"0.01": 81.12, "0.1": 83.84, "1.0": 87.83}


def test_tables_average_over_the_datasets_both_rows_report():
    result = {"scoring": "both", "ensemble": "mean", "seeds": [0, 1], "skipped": {"breast-us": "no folder x"},
              "datasets": {"rsna-pneumonia": "m", "chexpert-5x200": "m"},
              "zeroshot": {"rsna-pneumonia": {"accuracy": 0.5}, "chexpert-5x200": {"accuracy": 0.25}},
              "linear_probe": {"rsna-pneumonia": {f: {"accuracy_mean": 0.8, "accuracy_sd": 0.01} for f in
                                                  ("0.01", "0.1", "1.0")}}}
    text = tables(result)
    header = _row(text, "")
    assert header[1:] == ["chexpert-5x200", "rsna-pneumonia", "breast-us", "Avg."]  # the paper's order
    assert _row(text, "ours") == ["ours", "25.00", "50.00", "skipped", "37.50"]
    assert _row(text, PAPER) == [PAPER, "66.03", "78.32", "69.32", f"{(66.03 + 78.32) / 2:.2f}"]
    assert _row(text, "1%", "ours")[2:] == ["-", "80.00 ± 1.00", "skipped", "80.00"]  # RSNA only: the paper's
    assert _row(text, "100%", PAPER)[2:] == ["-", "87.83", "-", "87.83"]
    assert "Skipped: breast-us (no folder x)" in text


@pytest.mark.slow
def test_benchmark_end_to_end_on_every_dataset(tmp_path, tiny_folder, capsys):
    write_benchmark_root(tmp_path / "root")
    out = tmp_path / "out.json"
    assert main(["benchmark", "--model", str(tiny_folder), "--root", str(tmp_path / "root"), "--json", str(out),
                 "--markdown", str(tmp_path / "tables.md"), "--seeds", "0", "1", "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "Table 1: zero-shot" in printed.out and "Table 2: linear-probe" in printed.out
    assert _row(printed.out, "")[1:] == [*DATASETS, "Avg."] and _row(printed.out, PAPER)[1] == "66.03"
    assert printed.out.strip() == (tmp_path / "tables.md").read_text().strip()
    result = json.loads(out.read_text())
    assert set(result["zeroshot"]) == set(result["linear_probe"]) == set(DATASETS) and not result["skipped"]
    for name in DATASETS:
        assert set(result["zeroshot"][name]) == {"accuracy", "balanced_accuracy", "auc", "n"}
        assert set(result["linear_probe"][name]) == {"0.01", "0.1", "1.0"}
        assert {"accuracy_mean", "accuracy_sd"} <= set(result["linear_probe"][name]["0.01"])
    assert result["zeroshot"]["chexpert-5x200"]["n"] == 30  # GLoRIA's zero-shot set: every image, not a split
    # Table G: RSNA's test boxes with "pneumonia", MS-CXR's phrases (one image missing: skipped with a warning)
    assert "ms-cxr: 1 of 5 phrases skipped" in printed.err
    assert set(result["grounding"]) == {"rsna-pneumonia", "ms-cxr"} and result["grounding"]["ms-cxr"]["n"] == 4
    ms = _row(printed.out, "ms-cxr")
    assert ms[1:3] == ["each row's phrase", "4"] and ms[-1] == "BioViL 1.14, GLoRIA 0.93"
    assert ms[5] == f"{result['grounding']['ms-cxr']['cnr']:.2f}"
    assert _row(printed.out, "rsna-pneumonia")[1] == '"pneumonia"'

    assert (tmp_path / "root" / "medmoe-manifests" / "mrnet-acl.jsonl").exists()

    # a second root holding only BUSI: thyroid is skipped, BUSI's manifest is prepared, then reused
    write_busi(tmp_path / "other" / "breast-us")
    args = ["benchmark", "--model", str(tiny_folder), "--root", str(tmp_path / "other"), "--datasets", "thyroid-us",
            "breast-us", "--json", str(out), "--seeds", "0", "--quiet"]
    assert main(args) == 0
    assert main(args) == 0
    printed = capsys.readouterr()
    assert "Skipped: thyroid-us (no folder" in printed.out and "breast-us: reusing" in printed.err
    result = json.loads(out.read_text())
    assert set(result["skipped"]) == {"thyroid-us"} and set(result["zeroshot"]) == {"breast-us"}


def test_table_g_prints_each_grounding_dataset_beside_a_uniform_map():
    result = {"scoring": "both", "ensemble": "mean", "seeds": [0], "datasets": {"rsna-pneumonia": "m"},
              "skipped": {"ms-cxr": "no folder x"}, "zeroshot": {}, "linear_probe": {},
              "grounding": {"rsna-pneumonia": {"pointing_game": 0.25, "uniform_pointing_game": 0.125, "cnr": 0.5,
                                               "attention_in_mask": 0.2, "uniform_attention_in_mask": 0.125, "n": 8}}}
    text = tables(result)
    assert _row(text, "rsna-pneumonia") == ["rsna-pneumonia", '"pneumonia"', "8", "0.250 (0.125)", "0.200 (0.125)",
                                            "0.50", "-"]
    assert _row(text, "ms-cxr")[-1] == "skipped (no folder x)"


def test_the_fine_tuning_table_is_ours_beside_the_probe():
    result = {"scoring": "both", "ensemble": "mean", "seeds": [0, 1], "skipped": {"breast-us": "no folder x"},
              "datasets": {"rsna-pneumonia": "m", "chexpert-5x200": "m"},
              "zeroshot": {"rsna-pneumonia": {"accuracy": 0.5}},
              "linear_probe": {"rsna-pneumonia": {"1.0": {"accuracy_mean": 0.8, "accuracy_sd": 0.01}}},
              "finetune_mode": "lora", "finetune_skipped": {"chexpert-5x200": "class 'x' has no training row"},
              "finetune": {"rsna-pneumonia": {"accuracy_mean": 0.85, "accuracy_sd": 0.02, "macro_auc_mean": 0.9,
                                              "macro_auc_sd": 0.005}}}
    text = tables(result)
    assert "Table F (ours; the paper has no fine-tuning table): medmoe finetune --mode lora" in text
    assert _row(text, "fine-tuned (lora), accuracy %")[1:] == ["-", "85.00 ± 2.00", "skipped", "85.00"]
    assert _row(text, "linear probe 100 %, accuracy %")[1:] == ["-", "80.00 ± 1.00", "skipped", "80.00"]
    assert _row(text, "fine-tuned (lora), macro AUC")[1:] == ["-", "0.900 ± 0.005", "skipped", "0.900"]
    assert "Not fine-tuned: chexpert-5x200 (class 'x' has no training row)" in text
    del result["finetune"], result["finetune_mode"]
    assert "Table F" not in tables(result)  # only with --finetune


@pytest.mark.slow
def test_benchmark_with_fine_tuning(tmp_path, tiny_folder, capsys):
    write_busi(tmp_path / "root" / "breast-us")
    out = tmp_path / "out.json"
    assert main(["benchmark", "--model", str(tiny_folder), "--root", str(tmp_path / "root"), "--datasets", "breast-us",
                 "--seeds", "0", "1", "--finetune", "linear", "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Table F (ours" in printed and _row(printed, "fine-tuned (linear), accuracy %")[1] != "-"
    tuned = json.loads(out.read_text())["finetune"]["breast-us"]
    assert tuned["mode"] == "linear" and len(tuned["best_epoch"]) == 2 and 0 <= tuned["accuracy_mean"] <= 1


def _pretraining(folder, images: dict) -> str:
    """A pretraining manifest of ``images`` (file name -> array), one report each."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name, array in images.items():
        Image.fromarray(array).save(folder / name, quality=80)
    manifest = folder / "pretrain.jsonl"
    manifest.write_text("".join(json.dumps({"image": n, "report": "An image."}) + "\n" for n in images))
    return str(manifest)


@pytest.mark.slow
def test_benchmark_leakage_check_marks_a_contaminated_dataset(tmp_path, tiny_folder, capsys):
    import numpy as np
    from PIL import Image

    write_busi(tmp_path / "root" / "breast-us")
    scans = sorted(p for p in (tmp_path / "root").rglob("*).png"))  # not the masks
    for n, path in enumerate(scans):  # distinct pictures (the fixture's are blank, and blank images are not compared)
        blocks = np.random.default_rng(n).integers(0, 255, (4, 4))
        Image.fromarray(np.kron(blocks, np.ones((16, 16))).astype(np.uint8)).save(path)
    copied = Image.open(scans[4]).resize((48, 48))  # a benchmark image resized, re-encoded and renamed
    other = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    clean = _pretraining(tmp_path / "clean", {"other.png": other})
    leaky = _pretraining(tmp_path / "leaky", {"other.png": other, "renamed.jpg": np.asarray(copied)})
    args = ["benchmark", "--model", str(tiny_folder), "--root", str(tmp_path / "root"), "--datasets", "breast-us",
            "--seeds", "0", "--quiet", "--json", str(tmp_path / "out.json"), "--leakage-check"]
    assert main([*args, clean]) == 0
    printed = capsys.readouterr().out
    assert _row(printed, "")[1:] == ["breast-us", "Avg."] and "†" not in printed
    assert "Leakage check against" in printed and ": clean: none of 9 benchmark rows" in printed
    assert main([*args, leaky]) == 0
    printed = capsys.readouterr().out
    assert _row(printed, "")[1:] == ["breast-us †", "Avg."] and _row(printed, "labels")[2:] == ["breast-us †", "Avg."]
    assert "† breast-us: 1 of 9 rows share an image, patient or study with the pretraining data" in printed
    leakage = json.loads((tmp_path / "out.json").read_text())["leakage"]
    assert leakage["datasets"] == {"breast-us": {"rows": 9, "leaked": 1}} and leakage["pretrain"] == [leaky]


def test_leakage_check_defaults_to_the_manifest_the_run_trained_on(tmp_path, tiny, capsys, monkeypatch):
    import medmoe.eval.benchmark
    from medmoe.runs import write_training_data

    run = tmp_path / "run"
    model = tiny.save_pretrained(run / "checkpoints" / "step-000001" / "model")
    (run / "train_args.json").write_text("{}")
    args = ["benchmark", "--model", str(model), "--root", str(tmp_path / "none"), "--quiet", "--leakage-check"]
    assert main(args) == 2  # a run without data.json (trained before it was written)
    assert "give the pretraining manifests" in capsys.readouterr().err
    write_training_data(run, {"data": str(tmp_path / "shards-{000..009}.tar"), "val": None, "shards": True})
    assert main(args) == 2
    assert "webdataset shards" in capsys.readouterr().err
    checked = []
    monkeypatch.setattr(medmoe.eval.benchmark, "benchmark", lambda *a, leakage, **k: checked.append(leakage) or {
        "scoring": "both", "ensemble": "mean", "seeds": [0], "datasets": {}, "zeroshot": {}, "linear_probe": {},
        "skipped": {}})
    write_training_data(run, {"data": str(tmp_path / "train.jsonl"), "val": None, "shards": False})
    main(args)
    main([*args, "a.jsonl", "b.jsonl"])  # given: those
    assert checked == [[str(tmp_path / "train.jsonl")], ["a.jsonl", "b.jsonl"]]
