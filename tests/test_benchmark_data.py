"""Benchmark adapters (medmoe data prepare) on tiny fixtures written in each publisher's exact layout."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmoe.cli import main
from medmoe.data.benchmarks import DATASETS, chexpert, load_dataset_prompts, prepare
from medmoe.data.manifest import read_manifest
from medmoe.errors import ConfigError, DataError
from medmoe.eval.zeroshot import load_prompts

from fixtures_benchmarks import (ORGANS, OBSERVATIONS, ddti_outline, write_busi, write_chexpert, write_csv, write_ddti,
                                 write_ddti_case, write_medimeta, write_mrnet, write_mscxr, write_rsna)


def _lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


# --- CheXpert 5x200 -----------------------------------------------------------------------------------

def test_chexpert_follows_gloria_selection_and_warns_when_short(tmp_path):
    traps = write_chexpert(tmp_path / "src")
    summary = prepare("chexpert-5x200", tmp_path / "src", tmp_path / "out" / "m.jsonl")
    rows = _lines(tmp_path / "out" / "m.jsonl")
    assert len(rows) == 5 * 6 and summary["warnings"] and "fewer than 200" in summary["warnings"][0]
    chosen = {Path(r["image"]).as_posix().split("CheXpert-v1.0-small/")[1] for r in rows}
    assert not any(t.split("CheXpert-v1.0-small/")[1] in chosen for t in traps.values())
    assert {r["labels"][0] for r in rows} == set(chexpert.TASKS)
    assert all(r["report"] == r["labels"][0] and r["dataset"] == "chexpert-5x200" and r["modality"] == "xray"
               for r in rows)
    manifest = read_manifest(tmp_path / "out" / "m.jsonl")
    assert len(manifest.rows) == 30 and {r.dataset for r in manifest.rows} == {"chexpert-5x200"}


def test_chexpert_label_that_is_not_a_number_names_its_row_and_column(tmp_path, capsys):
    from medmoe.cli import main

    write_chexpert(tmp_path / "src")
    labels = tmp_path / "src" / "CheXpert-v1.0-small" / "train.csv"
    lines = labels.read_text().splitlines()
    cells = lines[3].split(",")
    cells[-1] = "yes"  # the last observation column (Support Devices) of data row 3
    labels.write_text("\n".join(lines[:3] + [",".join(cells)] + lines[4:]) + "\n")
    assert main(["data", "prepare", "chexpert-5x200", "--root", str(tmp_path / "src"),
                 "--out", str(tmp_path / "m.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.csv row 3: column 'Support Devices' is 'yes'" in err


def test_chexpert_draws_per_class_with_seed_from_either_root(tmp_path, monkeypatch):
    write_chexpert(tmp_path / "src")
    monkeypatch.setattr(chexpert, "PER_CLASS", 2)
    draws = {}
    for seed, root in ((0, tmp_path / "src"), (0, tmp_path / "src" / "CheXpert-v1.0-small"), (1, tmp_path / "src")):
        summary = prepare("chexpert-5x200", root, tmp_path / f"{seed}{root.name}.jsonl", seed=seed)
        assert summary["rows"] == 10 and not summary["warnings"]
        draws.setdefault(seed, []).append(sorted(Path(r["image"]).name + r["patient"]
                                                 for r in _lines(tmp_path / f"{seed}{root.name}.jsonl")))
    assert draws[0][0] == draws[0][1] != draws[1][0]


def test_chexpert_list_takes_fixed_selection(tmp_path):
    write_chexpert(tmp_path / "src")
    listed = [["0", "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"] + ["1.0" if o == "Atelectasis" else
                                                                                     "0.0" for o in OBSERVATIONS],
              ["1", "CheXpert-v1.0-small/train/patient00007/study1/view1_frontal.jpg"] + ["1.0" if o == "Cardiomegaly"
                                                                                     else "0.0" for o in OBSERVATIONS]]
    write_csv(tmp_path / "chexpert-5x200.csv", ["", "imgpath"] + OBSERVATIONS, listed)
    prepare("chexpert-5x200", tmp_path / "src", tmp_path / "m.jsonl", list_file=tmp_path / "chexpert-5x200.csv")
    rows = _lines(tmp_path / "m.jsonl")
    assert [(r["patient"], r["labels"]) for r in rows] == [("patient00001", ["Atelectasis"]),
                                                           ("patient00007", ["Cardiomegaly"])]


def _batch_folders(rows: list[dict]) -> set[str]:
    return {next(p for p in Path(r["image"]).parts if p.startswith("CheXpert-v1.0 batch")) for r in rows}


def test_chexpert_current_release_reads_batch_folders_with_cheXbert_labels(tmp_path):
    """Stanford AIMI's current download: no train.csv, train_cheXbert.csv, patients split across batch folders."""
    write_chexpert(tmp_path / "small", release="small")
    write_chexpert(tmp_path / "full", release="full")
    small = prepare("chexpert-5x200", tmp_path / "small", tmp_path / "small.jsonl")
    for root in (tmp_path / "full", tmp_path / "full" / "chexpertchestxrays-u20210408"):
        summary = prepare("chexpert-5x200", root, tmp_path / "out" / "m.jsonl")
        rows = _lines(tmp_path / "out" / "m.jsonl")
        assert summary["rows"] == 30 and "train_cheXbert.csv's labels" in summary["warnings"][0]
        assert summary["warnings"][1:] == small["warnings"]
        assert _batch_folders(rows) == {"CheXpert-v1.0 batch 2 (train 1)", "CheXpert-v1.0 batch 3 (train 2)",
                                        "CheXpert-v1.0 batch 4 (train 3)"}
        assert sorted((r["patient"], r["labels"]) for r in rows) == sorted(
            (r["patient"], r["labels"]) for r in _lines(tmp_path / "small.jsonl"))  # the same selection
        assert len(read_manifest(tmp_path / "out" / "m.jsonl").rows) == 30


def test_chexpert_labels_file_preference(tmp_path):
    download = tmp_path / "chexpertchestxrays-u20210408"
    write_chexpert(tmp_path, release="full")
    (download / "train_cheXbert.csv").unlink()
    summary = prepare("chexpert-5x200", tmp_path, tmp_path / "v.jsonl")
    assert "train_visualCheXbert.csv's labels" in summary["warnings"][0]  # 0/1: the uncertain trap has 2 positives
    assert summary["rows"] == 30
    batch1 = download / "CheXpert-v1.0 batch 1 (validate & csv)"  # train.csv, where a copy of it sits, wins
    shutil.copy(download / "train_visualCheXbert.csv", batch1 / "train.csv")
    summary = prepare("chexpert-5x200", tmp_path, tmp_path / "t.jsonl")
    assert summary["rows"] == 30 and not any("labels instead" in w for w in summary["warnings"])
    (batch1 / "train.csv").unlink()
    (download / "train_visualCheXbert.csv").unlink()
    with pytest.raises(DataError, match="no train.csv, train_cheXbert.csv or train_visualCheXbert.csv under"):
        prepare("chexpert-5x200", tmp_path, tmp_path / "n.jsonl")


def test_chexpert_list_of_small_paths_resolves_in_current_release(tmp_path):
    write_chexpert(tmp_path, release="full")
    listed = [["0", "CheXpert-v1.0-small/train/patient00034/study1/view1_frontal.jpg"]
              + ["1.0" if o == "Edema" else "0.0" for o in OBSERVATIONS]]
    write_csv(tmp_path / "chexpert-5x200.csv", ["", "imgpath"] + OBSERVATIONS, listed)
    prepare("chexpert-5x200", tmp_path, tmp_path / "m.jsonl", list_file=tmp_path / "chexpert-5x200.csv")
    (row,) = _lines(tmp_path / "m.jsonl")
    assert row["patient"] == "patient00034" and row["labels"] == ["Edema"]
    assert _batch_folders([row]) == {"CheXpert-v1.0 batch 4 (train 3)"}
    shutil.rmtree(tmp_path / "chexpertchestxrays-u20210408" / "CheXpert-v1.0 batch 4 (train 3)")
    with pytest.raises(DataError, match="patient00034/study1/view1_frontal.jpg .patient folder patient00034 under"):
        prepare("chexpert-5x200", tmp_path, tmp_path / "m.jsonl", list_file=tmp_path / "chexpert-5x200.csv")


# --- RSNA ---------------------------------------------------------------------------------------------

def test_rsna_one_row_per_patient_with_boxes(tmp_path):
    write_rsna(tmp_path / "rsna")
    prepare("rsna-pneumonia", tmp_path / "rsna", tmp_path / "m.jsonl")
    rows = {r["patient"]: r for r in _lines(tmp_path / "m.jsonl")}
    assert len(rows) == 8
    assert rows["p001"]["labels"] == ["Pneumonia"] and rows["p001"]["boxes"] == [[10, 20, 30, 40], [50, 60, 5, 6]]
    assert rows["p000"]["labels"] == ["Normal"] and rows["p000"]["boxes"] == []
    assert rows["p000"]["finding"] == "No Lung Opacity / Not Normal"
    assert {r["split"] for r in rows.values()} <= {"train", "val", "test"}
    assert len(read_manifest(tmp_path / "m.jsonl", decode=True).rows) == 8


def test_rsna_non_numeric_box_is_a_one_line_error_naming_the_row(tmp_path):
    write_rsna(tmp_path / "rsna")
    labels = tmp_path / "rsna" / "stage_2_train_labels.csv"
    labels.write_text(labels.read_text().replace("p003,10,20,30,40,1", "p003,10,twenty,30,40,1"))
    with pytest.raises(DataError, match=r"stage_2_train_labels.csv row 6: a box needs numeric"):
        prepare("rsna-pneumonia", tmp_path / "rsna", tmp_path / "m.jsonl")


def test_mscxr_one_row_per_phrase_with_its_boxes_and_missing_images_skipped(tmp_path, capsys):
    write_mscxr(tmp_path / "ms-cxr")
    write_mscxr(tmp_path / "ms-cxr", version="1.0.0")  # an older file beside it: the newest is read
    assert main(["data", "prepare", "ms-cxr", "--root", str(tmp_path / "ms-cxr"), "--out", str(tmp_path / "m.jsonl")]) == 0
    assert "ms-cxr: 1 of 5 phrases skipped: their image is not under" in capsys.readouterr().err
    rows = {r["phrase"]: r for r in map(json.loads, (tmp_path / "m.jsonl").read_text().splitlines())}
    assert set(rows) == {"right lower lobe pneumonia", "small left pleural effusion", "enlarged heart",
                         "patchy opacity at the left base"}
    effusion = rows["small left pleural effusion"]
    assert effusion["boxes"] == [[36, 40, 20, 16], [40, 20, 10, 10]] and effusion["box_size"] == [64, 64]
    assert effusion["report"] == effusion["phrase"] and effusion["labels"] == ["Pleural effusion"]
    assert effusion["split"] == "test" and effusion["source_split"] == "test" and effusion["patient"] == "p11000001"
    heart = rows["enlarged heart"]  # found by its dicom_id in a copy laid out otherwise, boxes in full-size pixels
    assert heart["image"].startswith("ms-cxr/downsized/") and heart["box_size"] == [128, 128]
    manifest = read_manifest(tmp_path / "m.jsonl")
    assert {r.phrase for r in manifest.rows} == set(rows) and not manifest.unusable
    assert next(r for r in manifest.rows if r.phrase == "enlarged heart").boxes == [[40, 60, 60, 40]]


def test_mscxr_bad_box_names_file_and_row(tmp_path, capsys):
    write_mscxr(tmp_path / "ms-cxr")
    csv_file = tmp_path / "ms-cxr" / "MS_CXR_Local_Alignment_v1.1.0.csv"
    lines = csv_file.read_text().splitlines()
    lines[2] = lines[2].replace(",20,16,", ",twenty,16,")  # d1's first box, data row 3
    csv_file.write_text("\n".join(lines) + "\n")
    assert main(["data", "prepare", "ms-cxr", "--root", str(tmp_path / "ms-cxr"), "--out", str(tmp_path / "m.jsonl")]) == 1
    assert "row 3: column 'w' must be a number (got 'twenty')" in capsys.readouterr().err


def test_patient_split_is_seeded_and_keeps_patients_together(tmp_path):
    from medmoe.data.benchmarks.common import patient_split

    rows = [{"patient": f"p{i // 2}", "labels": ["a" if i < 40 else "b"]} for i in range(80)]
    patient_split(rows, 0, "k")
    assert all(rows[i]["split"] == rows[i + 1]["split"] for i in range(0, 80, 2))
    for cls in "ab":  # 20 patients a class: 14 / 3 / 3
        splits = [r["split"] for r in rows[::2] if r["labels"] == [cls]]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (14, 3, 3)
    again = [dict(r) for r in rows]
    patient_split(again, 0, "k")
    other = [dict(r) for r in rows]
    patient_split(other, 1, "k")
    assert again == rows and other != rows


# --- DDTI thyroid -------------------------------------------------------------------------------------

def test_thyroid_labels_by_tirads_with_masks_and_test_list(tmp_path):
    write_ddti(tmp_path / "ddti")
    summary = prepare("thyroid-us", tmp_path / "ddti", tmp_path / "out" / "m.jsonl")
    rows = {Path(r["image"]).name: r for r in _lines(tmp_path / "out" / "m.jsonl")}
    assert sorted(rows) == ["1_1.jpg", "2_1.jpg", "2_2.jpg", "4_1.jpg", "5_1.jpg"]  # case 3 has no TI-RADS
    assert "1 cases without a TI-RADS" in summary["warnings"][0]
    assert rows["1_1.jpg"]["labels"] == ["benign"] and rows["2_2.jpg"]["labels"] == ["malignant"]
    assert rows["2_1.jpg"]["split"] == rows["2_2.jpg"]["split"]  # one case, one split
    mask = np.asarray(Image.open(tmp_path / "out" / rows["2_1.jpg"]["mask"]))
    assert mask.shape == (16, 20) and mask[5, 5] == 255 and mask[14, 18] == 0
    write_csv(tmp_path / "fold.csv", ["img_dir", "label"], [["images/2_1.jpg", "malignant"], ["images/5_1.jpg", "benign"]])
    summary = prepare("thyroid-us", tmp_path / "ddti", tmp_path / "l.jsonl", list_file=tmp_path / "fold.csv")
    rows = {Path(r["image"]).name: r["split"] for r in _lines(tmp_path / "l.jsonl")}
    assert rows["2_1.jpg"] == rows["5_1.jpg"] == "test" and "2_2.jpg" not in rows  # dropped: its case is in test
    assert {rows["1_1.jpg"], rows["4_1.jpg"]} <= {"train", "val"} and "dropped 1" in summary["warnings"][-1]


def test_thyroid_skips_and_names_broken_cases_in_kaggle_folder(tmp_path, capsys):
    """A mark naming an image not on disk, an invalid XML and an odd outline each lose one case or image, not the
    dataset; the Kaggle copy nests the files in DDTI/."""
    folder = tmp_path / "src" / "DDTI"
    write_ddti(folder)
    square = ddti_outline((2, 2), (12, 2), (12, 10), (2, 10))
    write_ddti_case(folder, 5, "3", [square, square])  # 5.xml names 5_2.jpg, which DDTI does not ship
    (folder / "4.xml").write_text("<case><number>4</number><tirads>5")
    write_ddti_case(folder, 2, "4b", [square, '[{"points": [{"x": 2}]}]'])
    out = tmp_path / "m.jsonl"
    assert main(["data", "prepare", "thyroid-us", "--root", str(tmp_path / "src"), "--out", str(out)]) == 0
    assert sorted(Path(r["image"]).name for r in _lines(out)) == ["1_1.jpg", "2_1.jpg", "5_1.jpg"]
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("medmoe: warning: thyroid-us: ") for line in err) and len(err) == 4
    assert "2.xml mark 2: svg is not a JSON list" in err[0] and err[0].endswith("image left out")
    assert "4.xml: not valid XML" in err[1] and err[1].endswith("case left out")
    assert "5.xml names 5_2.jpg, which is not in" in err[2] and "1 cases without a TI-RADS" in err[3]


# --- BUSI ---------------------------------------------------------------------------------------------

def test_busi_two_classes_and_mask_union(tmp_path):
    write_busi(tmp_path / "busi")
    prepare("breast-us", tmp_path / "busi", tmp_path / "out" / "m.jsonl")
    rows = {Path(r["image"]).name: r for r in _lines(tmp_path / "out" / "m.jsonl")}
    assert len(rows) == 9 and rows["normal (1).png"]["labels"] == ["benign"] and "mask" not in rows["normal (1).png"]
    assert rows["malignant (3).png"]["labels"] == ["malignant"]
    assert rows["benign (1).png"]["mask"].endswith("benign/benign (1)_mask.png")
    union = np.asarray(Image.open(tmp_path / "out" / rows["benign (2).png"]["mask"]))
    assert union[0, 0] == union[7, 7] == 255 and union[5, 1] == 0
    assert [r.mask is not None for r in read_manifest(tmp_path / "out" / "m.jsonl").rows].count(True) == 6


def test_busi_copy_without_masks_says_grounding_is_skipped(tmp_path, capsys):
    """Resized BUSI redistributions ship the class folders without the _mask files."""
    write_busi(tmp_path / "busi")
    masks = sorted((tmp_path / "busi").rglob("*_mask*.png"))
    masks[0].unlink()  # benign (1)_mask.png
    assert prepare("breast-us", tmp_path / "busi", tmp_path / "a.jsonl")["warnings"] == [
        "breast-us: 1 of 6 lesion images have no _mask file"]
    for mask in masks[1:]:
        mask.unlink()
    out = tmp_path / "m.jsonl"
    assert main(["data", "prepare", "breast-us", "--root", str(tmp_path / "busi"), "--out", str(out)]) == 0
    assert len(_lines(out)) == 9 and not any("mask" in r for r in _lines(out))
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("medmoe: warning: breast-us: no masks found") and err.endswith(
        ": grounding metrics will be skipped")


# --- MRNet --------------------------------------------------------------------------------------------

def test_mrnet_writes_chosen_slice_and_keeps_valid_as_test(tmp_path):
    write_mrnet(tmp_path / "src")
    prepare("mrnet-acl", tmp_path / "src", tmp_path / "out" / "m.jsonl")
    rows = {r["patient"]: r for r in _lines(tmp_path / "out" / "m.jsonl")}
    assert rows["0003"]["labels"] == ["ACL tear"] and rows["0002"]["labels"] == ["normal"]
    assert rows["0003"]["plane"] == "sagittal" and rows["0003"]["slice"] == 2
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / rows["0003"]["image"])), np.full((16, 16), 23))
    assert {rows["0008"]["split"], rows["0009"]["split"]} == {"test"}
    assert {r["split"] for p, r in rows.items() if int(p) < 8} <= {"train", "val"}
    prepare("mrnet-meniscus", tmp_path / "src", tmp_path / "a.jsonl", plane="axial", slice_index=4)
    row = _lines(tmp_path / "a.jsonl")[0]
    assert row["labels"] == ["normal"] and row["image"] == "images/mrnet/0000_axial_4.png"
    with pytest.raises(ConfigError, match="slice 9"):
        prepare("mrnet-acl", tmp_path / "src", tmp_path / "b.jsonl", slice_index=9)


def test_mrnet_interrupted_slice_write_leaves_no_file_to_reuse(tmp_path, monkeypatch):
    """The slice PNG cache is reused by existence, so a prepare killed mid-write must leave no half file."""
    write_mrnet(tmp_path / "src")
    save = Image.Image.save

    def half_then_die(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG\r\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        prepare("mrnet-acl", tmp_path / "src", tmp_path / "out" / "m.jsonl")
    assert not any((tmp_path / "out").rglob("*.png*"))
    monkeypatch.setattr(Image.Image, "save", save)
    prepare("mrnet-acl", tmp_path / "src", tmp_path / "out" / "m.jsonl")
    rows = {r["patient"]: r for r in _lines(tmp_path / "out" / "m.jsonl")}
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / rows["0000"]["image"])), np.full((16, 16), 20))


def test_mrnet_test_list_gives_listed_slices(tmp_path):
    write_mrnet(tmp_path / "src")
    write_csv(tmp_path / "test_fold1.csv", ["filename", "acl_label"],
         [["images/0001_sagittal_3.000000.png", "yes"], ["images/0009_sagittal_1.000000.png", "no"]])
    prepare("mrnet-acl", tmp_path / "src", tmp_path / "m.jsonl", list_file=tmp_path / "test_fold1.csv")
    test = [(r["patient"], r["slice"], r["labels"][0]) for r in _lines(tmp_path / "m.jsonl") if r["split"] == "test"]
    assert sorted(test) == [("0001", 3, "ACL tear"), ("0009", 1, "normal")]


# --- MediMeTA -----------------------------------------------------------------------------------------

def test_medimeta_uses_published_splits_and_labels(tmp_path):
    write_medimeta(tmp_path / "mm")
    prepare("medimeta-ct-axial", tmp_path / "mm", tmp_path / "m.jsonl")
    rows = _lines(tmp_path / "m.jsonl")
    assert [r["split"] for r in rows] == ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    assert rows[7]["labels"] == ["right kidney"] and rows[11]["labels"] == ["heart"] and rows[0]["modality"] == "ct"
    with pytest.raises(ConfigError, match="--list"):
        prepare("medimeta-ct-axial", tmp_path / "mm", tmp_path / "m.jsonl", list_file=tmp_path / "x.csv")


@pytest.mark.parametrize("path, text, message", [
    ("info.yaml", "tasks:\n  - task_name: organs\n   labels: {0: heart}\n", r"info.yaml: not valid YAML \("),
    ("info.yaml", "tasks:\n  - task_name: organ classification\n    labels: {heart: 0}\n",
     r"info.yaml: the labels of task 'organ classification' are not \{class index: class name\}"),
    ("info.yaml", "- just a list\n", "info.yaml has no task with task_name and labels"),
    ("splits/val.txt", "images/000008.tiff\nimages/slice_9.tiff\n", r"val.txt line 2: 'images/slice_9.tiff' is not"),
    ("splits/test.txt", "images/000010.tiff\r\nimages/000042.tiff\r\n", r"test.txt line 2: '\S+' has no label"),
    ("task_labels/organ classification.npy", "not an array", r"organ classification.npy: not a NumPy .npy array"),
])
def test_medimeta_malformed_file_is_one_line_error(tmp_path, capsys, path, text, message):
    write_medimeta(tmp_path / "mm")
    (tmp_path / "mm" / "organs_axial" / path).write_text(text)
    with pytest.raises(DataError, match=message):
        prepare("medimeta-ct-axial", tmp_path / "mm", tmp_path / "m.jsonl")
    args = ["data", "prepare", "medimeta-ct-axial", "--root", str(tmp_path / "mm"), "--out", str(tmp_path / "m.jsonl")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medmoe: error: medimeta-ct-axial: ")


# --- wrong layouts ------------------------------------------------------------------------------------

def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.parametrize("name, build, remove, missing", [
    ("chexpert-5x200", write_chexpert, "CheXpert-v1.0-small/train.csv", "train.csv"),
    ("chexpert-5x200", write_chexpert, "CheXpert-v1.0-small/train/patient00002", "view1_frontal.jpg"),
    ("rsna-pneumonia", write_rsna, "stage_2_train_labels.csv", "stage_2_train_labels.csv"),
    ("rsna-pneumonia", write_rsna, "stage_2_train_images/p003.dcm", "p003.dcm"),
    ("breast-us", write_busi, "Dataset_BUSI_with_GT/malignant", "malignant"),
    ("mrnet-acl", write_mrnet, "MRNet-v1.0/valid-acl.csv", "valid-acl.csv"),
    ("mrnet-meniscus", write_mrnet, "MRNet-v1.0/train/sagittal/0004.npy", "0004.npy"),
    ("medimeta-ct-axial", write_medimeta, "organs_axial/splits/test.txt", "test.txt"),
    ("medimeta-ct-axial", write_medimeta, "organs_axial/info.yaml", "info.yaml"),
])
def test_wrong_layout_is_one_line_error(tmp_path, capsys, name, build, remove, missing):
    build(tmp_path / "src")
    _remove(tmp_path / "src" / remove)
    with pytest.raises(DataError, match=missing):
        prepare(name, tmp_path / "src", tmp_path / "m.jsonl")
    assert main(["data", "prepare", name, "--root", str(tmp_path / "src"), "--out", str(tmp_path / "m.jsonl")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medmoe: error: ") and missing in err[0]


def test_cli_prepares_with_options_and_rejects_them_elsewhere(tmp_path, capsys):
    write_mrnet(tmp_path / "src")
    out = tmp_path / "m.jsonl"
    assert main(["data", "prepare", "mrnet-acl", "--root", str(tmp_path / "src"), "--out", str(out),
                 "--plane", "axial", "--slice", "1"]) == 0
    assert _lines(out)[0]["image"] == "images/mrnet/0000_axial_1.png" and "10 rows" in capsys.readouterr().out
    assert main(["data", "prepare", "roco", "--root", str(tmp_path), "--out", str(out), "--plane", "axial"]) == 2


# --- prompt files -------------------------------------------------------------------------------------

def _classes(name: str) -> set[str]:
    return set(ORGANS) if DATASETS[name].classes is None else set(DATASETS[name].classes)


@pytest.mark.parametrize("name", list(DATASETS))
def test_prompt_file_covers_dataset_classes(name):
    prompts = load_dataset_prompts(name)
    assert prompts["_source"] and list(prompts["classes"]) == [name]
    classes = prompts["classes"][name]
    assert set(classes) == _classes(name) and all(p and all(s and s.strip() == s and "  " not in s for s in p)
                                                   for p in classes.values())
    shipped = Path(__file__).parents[1] / "src" / "medmoe" / "data" / "prompts" / f"{DATASETS[name].prompts}.json"
    assert load_prompts(shipped)["classes"]  # the zero-shot evaluator reads the file as it is


def test_chexpert_prompts_are_gloria_products_sampled_with_seed():
    full = load_dataset_prompts("chexpert-5x200")["classes"]["chexpert-5x200"]
    assert {c: len(p) for c, p in full.items()} == {"Atelectasis": 210, "Cardiomegaly": 15, "Consolidation": 192,
                                                    "Edema": 18, "Pleural Effusion": 54}
    assert full["Atelectasis"][0] == "subsegmental atelectasis at the mid lung zone"
    assert full["Pleural Effusion"][3] == "right bilateral pleural effusion"  # severity x location x subtype
    five = load_dataset_prompts("chexpert-5x200", n=5, seed=0)["classes"]["chexpert-5x200"]
    assert five == load_dataset_prompts("chexpert-5x200", n=5, seed=0)["classes"]["chexpert-5x200"]
    assert five != load_dataset_prompts("chexpert-5x200", n=5, seed=1)["classes"]["chexpert-5x200"]
    assert all(len(p) == 5 and set(p) <= set(full[c]) for c, p in five.items())
    rsna = load_dataset_prompts("rsna-pneumonia")["classes"]["rsna-pneumonia"]
    assert len(rsna["Pneumonia"]) == 6 * 4 * 13 - 1  # less the empty product: no words to embed
    assert "MedCLIP" in load_dataset_prompts("rsna-pneumonia")["_source"]
