"""The one CSV/JSONL reader (medmoe.data.tables) and its callers, on files as spreadsheets and publishers save them."""
import csv
import gzip
import json

import numpy as np
import pytest
from PIL import Image

from medmoe.cli import main
from medmoe.data.benchmarks import rsna
from medmoe.data.corpora import prepare as prepare_corpus
from medmoe.data.tables import read_cells, read_rows, read_table
from medmoe.errors import DataError


def excel(path, lines, gz=False):
    """``lines`` as Excel saves a CSV UTF-8 (a byte-order mark, CRLF line ends), gzipped when ``gz``."""
    data = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_csv_with_bom_and_crlf(tmp_path):
    path = excel(tmp_path / "t.csv", ["image,report", 'a.png,"Clear lungs, no effusion."', "", "b.png,Normal."])
    columns, records = read_table(path)
    assert columns == ["image", "report"]  # was '\ufeffimage' where the BOM was not dropped
    assert [(r.row, r.data) for r in records] == [(1, {"image": "a.png", "report": "Clear lungs, no effusion."}),
                                                 (2, {"image": "b.png", "report": "Normal."})]


def test_csv_gz_with_bom(tmp_path):
    path = excel(tmp_path / "t.csv.gz", ["dicom_id,split", "d1,train"], gz=True)
    assert read_rows(path, "mimic-cxr", ("dicom_id", "split")) == [{"dicom_id": "d1", "split": "train"}]


def test_jsonl_with_bom_and_crlf(tmp_path):
    path = excel(tmp_path / "t.jsonl", ['{"image": "a.png", "report": "x"}', "", '{"image": "b.png", "mask": "m.png"}'])
    columns, records = read_table(path)  # was: row 1: invalid JSON
    assert columns == ["image", "report", "mask"] and [r.row for r in records] == [1, 2]
    assert [r.raw for r in records] == ['{"image": "a.png", "report": "x"}', '{"image": "b.png", "mask": "m.png"}']


def test_bad_values_name_row_and_column(tmp_path):
    (tmp_path / "t.jsonl").write_bytes(b'{"image": "a.png"}\n[1, 2]\n{"image": \n{"image": "b.png", "report": "caf\xe9"}\n')
    _, records = read_table(tmp_path / "t.jsonl")
    assert [(r.row, r.error) for r in records] == [
        (1, None), (2, "not a JSON object"), (3, "invalid JSON (Expecting value)"),
        (4, "column 'report' cannot be decoded as UTF-8 (save the file as UTF-8)")]
    assert records[3].raw == '{"image": "b.png", "report": "caf\ufffd"}'  # so that label-modality can copy it
    (tmp_path / "t.csv").write_bytes(b"image,report\na.png,ok\nb.png,ok,extra\nc.png\nd.png,caf\xe9\n")
    _, records = read_table(tmp_path / "t.csv")
    assert [(r.row, r.error) for r in records] == [
        (1, None), (2, "3 cells, the header names 2 columns"), (3, None),
        (4, "column 'report' cannot be decoded as UTF-8 (save the file as UTF-8)")]
    assert records[2].data == {"image": "c.png", "report": ""}
    with pytest.raises(DataError, match=r"^busi: .*t\.csv row 2: 3 cells, the header names 2 columns$"):
        read_rows(tmp_path / "t.csv", "busi")
    with pytest.raises(DataError, match=r"^rsna: .*t\.csv has no column 'Target', 'x' \(columns: image, report\)$"):
        read_rows(tmp_path / "t.csv", "rsna", ("Target", "x", "image"))
    with pytest.raises(DataError, match=r"t\.csv row 5: column 2 cannot be decoded as UTF-8"):  # every line counts
        read_cells(tmp_path / "t.csv")


def test_label_modality_on_excel_csv_and_jsonl(tmp_path, capsys):
    reports = ["Chest radiograph: clear lungs.", "Axial CT of the abdomen.", "MRI of the knee.", "Ultrasound, liver."]
    lines = ["image,report"] + [f'img/{i}.png,"{r}"' for i, r in enumerate(reports)]
    for manifest in (excel(tmp_path / "m.csv", lines),
                     excel(tmp_path / "m.jsonl", [json.dumps({"image": f"img/{i}.png", "report": r})
                                                  for i, r in enumerate(reports)])):  # was: row 1 unparseable
        out = tmp_path / "out" / f"labelled{manifest.suffix}"
        assert main(["data", "label-modality", str(manifest), "--out", str(out), "--json", str(tmp_path / "c.json")]) == 0
        counts = json.loads((tmp_path / "c.json").read_text())
        assert (counts["rows"], counts["unparseable"], counts["from_report"]) == (4, 0, 4)
        assert counts["per_modality"] == {"xray": 1, "ct": 1, "mri": 1, "ultrasound": 1, "unknown": 0}
    with open(tmp_path / "out" / "labelled.csv", newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["image", "report", "modality", "modality_source"]


def test_mimic_tables_gzipped_with_bom(tmp_path):
    dicom, study, subject = "d1", "50414267", "10000032"
    excel(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id,study_id,subject_id,split",
                                                       f"{dicom},{study},{subject},train"], gz=True)
    excel(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id,subject_id,study_id,ViewPosition",
                                                          f"{dicom},{subject},{study},PA"], gz=True)
    folder = tmp_path / "files" / "p10" / f"p{subject}"
    (folder / f"s{study}").mkdir(parents=True)
    (folder / f"s{study}.txt").write_text("FINDINGS: Lungs clear.\nIMPRESSION: Normal.\n")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"s{study}" / f"{dicom}.jpg")
    summary = prepare_corpus("mimic-cxr", tmp_path, tmp_path / "m.jsonl")  # was: has no column 'dicom_id'
    assert summary["rows"] == 1 and summary["per_split"] == {"train": 1}


def test_pmc_oa_jsonl_with_bom_and_crlf(tmp_path):
    images = tmp_path / "caption_T060_filtered_top4_sep_v0_subfigures"
    images.mkdir()
    for name in ("PMC1_F1.jpg", "PMC2_F1.jpg"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / name)
    excel(tmp_path / "train.jsonl", [json.dumps({"image": "PMC1_F1.jpg", "caption": "Axial CT."}),
                                     json.dumps({"image": "PMC2_F1.jpg", "caption": "Chest X-ray."})])
    assert prepare_corpus("pmc-oa", tmp_path, tmp_path / "m.jsonl")["rows"] == 2  # was: row 1: invalid JSON


def test_rsna_csvs_with_bom_and_crlf(tmp_path):
    (tmp_path / "stage_2_train_images").mkdir()
    for pid in ("p0", "p1"):
        (tmp_path / "stage_2_train_images" / f"{pid}.dcm").write_bytes(b"")
    excel(tmp_path / "stage_2_train_labels.csv", ["patientId,x,y,width,height,Target", "p0,,,,,0", "p1,1,2,3,4,1"])
    excel(tmp_path / "stage_2_detailed_class_info.csv", ["patientId,class", "p0,Normal", "p1,Lung Opacity"])
    rows, _ = rsna.read(tmp_path, tmp_path, 0, None)
    assert [(r["patient"], r["labels"], r["boxes"]) for r in rows] == [("p0", ["Normal"], []),
                                                                        ("p1", ["Pneumonia"], [[1.0, 2.0, 3.0, 4.0]])]


def test_unclosed_quote_is_one_line_naming_the_line(tmp_path, capsys):
    (tmp_path / "m.csv").write_text('image,report\na.png,"Clear lungs.\nb.png,' + "x" * 200_000 + "\n")
    assert main(["data", "check", str(tmp_path / "m.csv")]) == 1  # was: a csv.Error traceback
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "m.csv line 2: field larger than field limit" in err
