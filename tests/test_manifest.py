import csv
import json

import pytest

from medmoe.cli import main
from medmoe.data.manifest import read_manifest
from medmoe.data.modality import normalise_modality


@pytest.mark.parametrize("raw, name", [
    ("CR", "xray"), ("DX", "xray"), ("X-ray", "xray"), ("Radiograph", "xray"), ("MR", "mri"), ("MRI", "mri"),
    ("US", "ultrasound"), ("sonography", "ultrasound"), ("CT", "ct"), ("computed tomography", "ct"),
    ("banana", None), ("", None), (None, None),
])
def test_modality_spellings(raw, name):
    assert normalise_modality(raw) == name


def write_bad_manifest(tmp_path, synth_rows):
    """Six good rows plus missing, corrupt, empty-report, unknown-modality and broken-JSON rows."""
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    bad = [
        {"image": "nope.png", "report": "Normal chest.", "modality": "xray"},
        {"image": "corrupt.png", "report": "Normal chest.", "modality": "xray"},
        {"image": synth_rows[0]["image"], "report": "  ... ", "modality": "xray"},
        {"image": synth_rows[0]["image"], "report": "Normal.", "modality": "banana"},
    ]
    lines = [json.dumps(r) for r in synth_rows[:3] + bad[:2] + synth_rows[3:6] + bad[2:]] + ["{not json"]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "m.jsonl"


@pytest.fixture(scope="module")
def synth_rows(tmp_path_factory):
    from medmoe.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    manifest = generate(root, n=40, seed=1, size=64, progress=False)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in rows:
        r["image"] = str(root / r["image"])
    return rows


def test_bad_rows_are_skipped_and_reported(tmp_path, synth_rows):
    manifest = read_manifest(write_bad_manifest(tmp_path, synth_rows), decode=True)
    assert manifest.total == 11 and len(manifest.rows) == 6
    reasons = {u["row"]: u["reason"] for u in manifest.unusable}
    assert reasons[4] == "image file not found: nope.png"
    assert "cannot decode image" in reasons[5]
    assert reasons[9] == "empty report"
    assert reasons[10] == "unknown modality 'banana'"
    assert reasons[11].startswith("invalid JSON")


def test_data_check_cli_summary_and_json(tmp_path, synth_rows, capsys):
    path = write_bad_manifest(tmp_path, synth_rows)
    assert main(["data", "check", str(path), "--json", str(tmp_path / "check.json")]) == 0
    summary = json.loads((tmp_path / "check.json").read_text())
    assert set(summary) == {"rows", "usable", "per_modality", "unusable"}
    assert summary["rows"] == 11 and summary["usable"] == 6 and sum(summary["per_modality"].values()) == 6
    out = capsys.readouterr().out
    assert "11 rows, 6 usable" in out and "row 10: unknown modality 'banana'" in out


def test_all_bad_manifest_exits_non_zero_with_one_line(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "x.png", "report": "r"}) + "\n")
    assert main(["data", "check", str(tmp_path / "bad.jsonl")]) == 1
    assert capsys.readouterr().err.strip().endswith("no usable row")
    code = main(["train", "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "no usable training row" in err


def test_csv_manifest_with_labels_and_dicom_modality(tmp_path, synth_rows):
    import pydicom.data

    ct = pydicom.data.get_testdata_file("CT_small.dcm", download=False)
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "report", "modality", "split", "labels"])
        w.writeheader()
        w.writerow({"image": synth_rows[0]["image"], "report": "Clear lungs.", "modality": "DX", "split": "val",
                    "labels": "normal;clear"})
        w.writerow({"image": ct, "report": "Axial CT.", "modality": "", "split": "train", "labels": ""})
    rows = read_manifest(tmp_path / "m.csv", decode=True).rows
    assert [(r.modality, r.split, r.labels) for r in rows] == [("xray", "val", ["normal", "clear"]), ("ct", "train", [])]


def write_excel_csv(path, lines):
    """``lines`` as Excel saves a CSV UTF-8: a byte-order mark and CRLF line ends."""
    path.write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8"))
    return path


def excel_lines(rows):
    return ["image,report,modality"] + [f"{r['image']},\"{r['report']}\",{r['modality']}" for r in rows]


def test_excel_csv_manifest_with_bom_and_crlf(tmp_path, synth_rows, capsys):
    path = write_excel_csv(tmp_path / "m.csv", excel_lines(synth_rows[:4]))  # was: row 1..4: missing 'image'
    manifest = read_manifest(path)
    assert (manifest.total, len(manifest.rows), manifest.unusable) == (4, 4, [])
    assert [r.report for r in manifest.rows] == [r["report"] for r in synth_rows[:4]]  # no trailing "\r"
    assert main(["data", "check", str(path)]) == 0
    assert "4 rows, 4 usable" in capsys.readouterr().out


def test_jsonl_manifest_with_bom_and_crlf(tmp_path, synth_rows):
    path = tmp_path / "m.jsonl"
    path.write_bytes(("\ufeff" + "\r\n".join(json.dumps(r) for r in synth_rows[:4]) + "\r\n\r\n").encode("utf-8"))
    manifest = read_manifest(path)  # was: row 1: invalid JSON
    assert (manifest.total, len(manifest.rows)) == (4, 4)


def test_bad_csv_rows_are_skipped_naming_row_and_column(tmp_path, synth_rows, capsys):
    lines = excel_lines(synth_rows[:4])
    lines[2] += ",extra"  # data row 2: more cells than the header
    path = write_excel_csv(tmp_path / "m.csv", lines)
    path.write_bytes(path.read_bytes().replace(synth_rows[2]["report"].encode(), b"Caf\xe9 " + synth_rows[2]["report"].encode()))
    assert main(["data", "check", str(path)]) == 0  # was: UnicodeDecodeError traceback
    out = capsys.readouterr().out
    assert "4 rows, 2 usable" in out
    assert "row 2: 4 cells, the header names 3 columns" in out
    assert "row 3: column 'report' cannot be decoded as UTF-8" in out


def test_csv_manifest_without_a_required_column_is_one_line(tmp_path, synth_rows, capsys):
    path = write_excel_csv(tmp_path / "m.csv", ["path,report,modality", *excel_lines(synth_rows[:2])[1:]])
    assert main(["data", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path} has no column 'image' (columns: path, report, modality)" in err
