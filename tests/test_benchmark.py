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
