"""Pretraining-corpus adapters on tiny fixtures written in each publisher's exact layout."""
import csv
import gzip
import json

import numpy as np
import pytest
from PIL import Image

from medmoe.data.corpora import prepare as prepare_corpus
from medmoe.data.corpora.mimic_cxr import report_sections
from medmoe.data.manifest import read_manifest
from medmoe.errors import DataError


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(path)
    return path


def _rows(out):
    return [json.loads(line) for line in out.read_text().splitlines()]


def _csv(path, header, rows, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open(path, "wt", newline="") if gz else open(path, "w", newline="")) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# ------------------------------------------------------------------ ROCO

def _roco(root):
    for split, ids in (("train", ["ROCO_00001", "ROCO_00002", "ROCO_00003"]), ("validation", ["ROCO_00020"])):
        folder = root / "data" / split / "radiology"
        folder.mkdir(parents=True)
        captions = {"ROCO_00001": " Axial CT of the abdomen showing a hepatic cyst.",
                    "ROCO_00002": " Lateral plain radiograph of the knee.", "ROCO_00003": " ",
                    "ROCO_00020": " Postoperative anteroposterior radiograph of the pelvis."}
        (folder / "captions.txt").write_text("".join(f"{i}\t{captions[i]}\n" for i in ids))
        (folder / "dlinks.txt").write_text("".join(
            f"{i}\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/69/93/PMC{n}.tar.gz -P /path/to/Dir\tfig-{n}.jpg\n"
            for n, i in enumerate(ids)))
        for n, i in enumerate(ids):
            _image(folder / "images" / f"PMC{n}_fig-{n}.jpg")
    (root / "data" / "train" / "non-radiology").mkdir()  # never read


def test_roco(tmp_path):
    _roco(tmp_path / "roco")
    (tmp_path / "roco/data/train/radiology/images/PMC1_fig-1.jpg").unlink()  # a figure fetch.py failed on
    summary = prepare_corpus("roco", tmp_path / "roco", tmp_path / "out" / "roco.jsonl")
    assert summary["skipped"] == {"empty report": 1, "image file not found": 1}
    assert summary["per_split"] == {"train": 1, "val": 1}
    rows = _rows(tmp_path / "out" / "roco.jsonl")
    assert [(r["roco_id"], r["split"], r["modality"], r["dataset"]) for r in rows] == [
        ("ROCO_00001", "train", "", "roco"), ("ROCO_00020", "val", "", "roco")]
    assert rows[0]["report"] == "Axial CT of the abdomen showing a hepatic cyst."
    assert rows[0]["image"] == "../roco/data/train/radiology/images/PMC0_fig-0.jpg"
    assert len(read_manifest(tmp_path / "out" / "roco.jsonl").rows) == 2  # the manifest reads back


def test_roco_wrong_layout(tmp_path):
    (tmp_path / "data" / "train" / "radiology").mkdir(parents=True)
    with pytest.raises(DataError, match=r"roco: data/\*/radiology/captions.txt not found"):
        prepare_corpus("roco", tmp_path, tmp_path / "m.jsonl")


# ------------------------------------------------------------------ PMC-OA

def _pmc_oa(root, split_files=True):
    images = root / "caption_T060_filtered_top4_sep_v0_subfigures"
    records = {"train": [{"image": "PMC1_F1_1.jpg", "caption": "H&E stain of the tumour."},
                         {"image": "PMC1_F1_2.jpg", "caption": "Missing image."}],
               "valid": [{"image": "PMC2_F2_1.jpg", "caption": ""}],
               "test": [{"image": "PMC3_F3_1.jpg", "caption": "Axial T2-weighted MRI.", "alignment_type": "x"}]}
    for name in ("PMC1_F1_1.jpg", "PMC2_F2_1.jpg", "PMC3_F3_1.jpg"):
        _image(images / name)
    if split_files:
        for split, recs in records.items():
            (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    else:
        (root / "pmc_oa.jsonl").write_text("".join(json.dumps(r) + "\n" for recs in records.values() for r in recs))


def test_pmc_oa_split_files(tmp_path):
    _pmc_oa(tmp_path)
    summary = prepare_corpus("pmc-oa", tmp_path, tmp_path / "m.jsonl")
    assert summary["skipped"] == {"empty report": 1, "image file not found": 1}
    rows = _rows(tmp_path / "m.jsonl")
    assert [(r["image"], r["split"]) for r in rows] == [
        ("caption_T060_filtered_top4_sep_v0_subfigures/PMC1_F1_1.jpg", "train"),
        ("caption_T060_filtered_top4_sep_v0_subfigures/PMC3_F3_1.jpg", "test")]


def test_pmc_oa_whole_file_gets_a_seeded_split(tmp_path):
    _pmc_oa(tmp_path, split_files=False)
    prepare_corpus("pmc-oa", tmp_path, tmp_path / "a.jsonl", seed=1)
    prepare_corpus("pmc-oa", tmp_path, tmp_path / "b.jsonl", seed=1)
    assert _rows(tmp_path / "a.jsonl") == _rows(tmp_path / "b.jsonl")
    assert {r["split"] for r in _rows(tmp_path / "a.jsonl")} <= {"train", "val", "test"}


def test_pmc_oa_wrong_layout(tmp_path):
    (tmp_path / "caption_T060_filtered_top4_sep_v0_subfigures").mkdir()
    with pytest.raises(DataError, match="pmc-oa: train.jsonl/valid.jsonl/test.jsonl or pmc_oa.jsonl not found"):
        prepare_corpus("pmc-oa", tmp_path, tmp_path / "m.jsonl")
    (tmp_path / "train.jsonl").write_text('{"image": "a.jpg"\n')
    with pytest.raises(DataError, match="train.jsonl row 1: invalid JSON"):
        prepare_corpus("pmc-oa", tmp_path, tmp_path / "m.jsonl")


# ------------------------------------------------------------------ IU X-ray / Open-i

IU_REPORT = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><meta type="rr"/><uId id="CXR{n}"/>
<MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">XXXX-year-old male, chest pain.</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH><major>normal</major></MeSH>
{images}
</eCitation>
"""


def _iu(root):
    reports = root / "ecgen-radiology"
    reports.mkdir(parents=True)
    cases = [(1, "The cardiac silhouette and mediastinum size are within normal limits.", "Normal chest x-XXXX.",
              ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]),
             (2, "", "", ["CXR2_IM-0652-1001"]),  # neither section: skipped
             (3, "", "No active disease.", ["CXR3_IM-1384-1001"]),
             (4, "Clear lungs.", "", [])]  # no image
    for n, findings, impression, ids in cases:
        images = "".join(f'<parentImage id="{i}"><figureId>F{k}</figureId><caption>PA</caption></parentImage>'
                         for k, i in enumerate(ids))
        (reports / f"{n}.xml").write_text(IU_REPORT.format(n=n, findings=findings, impression=impression,
                                                           images=images))
        for i in ids:
            _image(root / "NLMCXR_png" / f"{i}.png")


def test_iu_xray(tmp_path):
    _iu(tmp_path)
    summary = prepare_corpus("iu-xray", tmp_path, tmp_path / "m.jsonl")
    assert summary["skipped"] == {"empty report": 1, "report without image": 1}
    rows = _rows(tmp_path / "m.jsonl")
    assert [r["image"] for r in rows] == ["NLMCXR_png/CXR1_1_IM-0001-3001.png", "NLMCXR_png/CXR1_1_IM-0001-4001.png",
                                          "NLMCXR_png/CXR3_IM-1384-1001.png"]
    assert rows[0]["report"] == ("The cardiac silhouette and mediastinum size are within normal limits. "
                                 "Normal chest x-XXXX.")  # FINDINGS + IMPRESSION, not the indication
    assert rows[2]["report"] == "No active disease." and {r["modality"] for r in rows} == {"xray"}
    assert rows[0]["split"] == rows[1]["split"]  # one report, one split


def test_iu_xray_wrong_layout(tmp_path):
    _image(tmp_path / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png")
    with pytest.raises(DataError, match=r"iu-xray: ecgen-radiology/\*.xml not found"):
        prepare_corpus("iu-xray", tmp_path, tmp_path / "m.jsonl")


# ------------------------------------------------------------------ MIMIC-CXR

MIMIC_REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  //  eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows.

 IMPRESSION:

 No acute cardiopulmonary process.
"""


def _mimic(root):
    split = [("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "50414267", "10000032", "train"),
             ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "50414267", "10000032", "train"),
             ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "53189527", "10000032", "validate"),
             ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "53911762", "10000032", "test"),
             ("fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818", "56699142", "10000032", "test")]
    _csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split, gz=True)
    _csv(root / "mimic-cxr-2.0.0-metadata.csv.gz",
         ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns"],
         [(d, p, s, "CHEST (PA AND LAT)", "PA" if k == 0 else "LATERAL", 3056, 2544)
          for k, (d, s, p, _) in enumerate(split)], gz=True)
    study = root / "files" / "p10" / "p10000032"
    (study).mkdir(parents=True)
    (study / "s50414267.txt").write_text(MIMIC_REPORT)
    (study / "s53189527.txt").write_text("                                 FINAL REPORT\n CHEST RADIOGRAPH: "
                                         "Heart size normal. Lungs clear.\n")
    (study / "s53911762.txt").write_text("  FINAL REPORT\n\n")  # nothing but the banner
    for d, s, _, _ in split[:4]:
        _image(study / f"s{s}" / f"{d}.jpg")  # the last image is missing


def test_mimic_cxr(tmp_path):
    _mimic(tmp_path)
    summary = prepare_corpus("mimic-cxr", tmp_path, tmp_path / "m.jsonl")
    assert summary["skipped"] == {"empty report": 1, "image file not found": 1}
    assert summary["per_split"] == {"train": 2, "val": 1} and summary["per_modality"] == {"xray": 3}
    rows = _rows(tmp_path / "m.jsonl")
    assert rows[0]["image"] == "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    assert rows[0]["report"] == ("There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular "
                                 "opacities that most likely represent nipple shadows. No acute cardiopulmonary process.")
    assert [r["view"] for r in rows] == ["PA", "LATERAL", "LATERAL"]
    assert rows[2]["report"] == "CHEST RADIOGRAPH: Heart size normal. Lungs clear."  # no sections: the whole text


def test_mimic_report_sections():
    assert report_sections("FINDINGS: Lungs clear.\nIMPRESSION: Normal.") == "Lungs clear. Normal."
    assert report_sections(" IMPRESSION:\n No pneumonia.\n") == "No pneumonia."
    assert report_sections(" WET READ: ___ 3:18 AM\n FINDINGS:\n Small effusion.\n") == "Small effusion."


def test_mimic_cxr_wrong_layout(tmp_path):
    _mimic(tmp_path)
    (tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(DataError, match=r"mimic-cxr: mimic-cxr-2.0.0-metadata.csv\[.gz\] not found"):
        prepare_corpus("mimic-cxr", tmp_path, tmp_path / "m.jsonl")
    _csv(tmp_path / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id"], [], gz=True)
    with pytest.raises(DataError, match="has no column 'split'"):
        prepare_corpus("mimic-cxr", tmp_path, tmp_path / "m.jsonl")


# ------------------------------------------------------------------ UniMed

def _unimed(root):
    chexpert = root / "CheXpert-v1.0-small"
    _csv(chexpert / "chexpert_with_captions_only_frontal_view.csv", ["filename", "labels", "captions"],
         [["['train/patient00001/study1/view1_frontal.jpg']", "['Pleural Effusion']",
           "['Chest X-ray showing pleural effusion.', 'Fluid in the pleural space.']"],
          ["['train/patient00002/study1/view1_frontal.jpg']", "['No Finding']", "['Normal chest radiograph.']"]])
    _image(chexpert / "train/patient00001/study1/view1_frontal.jpg")  # patient00002's is missing
    radimagenet = root / "radimagenet"
    _csv(radimagenet / "radiology_ai" / "radimagenet_with_captions_training_set.csv", ["filename", "label", "caption"],
         [["['radiology_ai/CT/abd/normal/ct1.png']", "['normal']", "['Abdominal scan, normal.']"],
          ["['radiology_ai/MR/knee/acl/mr1.png']", "['acl']", "['Knee with ACL tear.']"],
          ["['radiology_ai/US/thyroid/nodule/us1.png']", "['nodule']", "['Thyroid nodule.']"]])
    for name in ("CT/abd/normal/ct1.png", "MR/knee/acl/mr1.png", "US/thyroid/nodule/us1.png"):
        _image(radimagenet / "radiology_ai" / name)
    quilt = root / "Quilt"
    _csv(quilt / "quilt_1M_lookup.csv", ["", "caption", "image_path", "subset"],
         [["0", "Histology of the colon with crypts.", "q1.jpg", "openpath"], ["1", "", "q2.jpg", "openpath"]])
    _image(quilt / "quilt_1m" / "q1.jpg"), _image(quilt / "quilt_1m" / "q2.jpg")
    rocov2 = root / "ROCOV2"
    _csv(rocov2 / "train_captions.csv", ["ID", "Caption"], [["ROCOv2_2023_train_000001", "Head CT, no bleed."],
                                                             ["ROCOv2_2023_train_000002", "Chest film."]])
    _csv(rocov2 / "train_concepts.csv", ["ID", "CUIs"], [["ROCOv2_2023_train_000001", "C0040405;C0018670"],
                                                          ["ROCOv2_2023_train_000002", "C0817096"]])
    for i in (1, 2):
        _image(rocov2 / "train" / f"ROCOv2_2023_train_00000{i}.jpg")
    openi = root / "openI"
    openi.mkdir()
    (openi / "filter_cap.json").write_text(json.dumps({"annotations": [{"image_id": "CXR1_1_IM-0001-3001",
                                                                        "caption": "Normal chest."}]}))
    (openi / "openai_refined_concepts.json").write_text(json.dumps({"refined_captions": [["Clear lungs."]]}))
    _image(openi / "image" / "CXR1_1_IM-0001-3001.png")


def test_unimed_states_modality_per_source(tmp_path):
    _unimed(tmp_path)
    summary = prepare_corpus("unimed", tmp_path, tmp_path / "m.jsonl")
    assert summary["skipped"] == {"empty report": 1, "image file not found": 1}
    rows = {r["image"]: r for r in _rows(tmp_path / "m.jsonl")}
    assert {k: (r["source"], r["modality"]) for k, r in rows.items()} == {
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg": ("chexpert", "xray"),
        "radimagenet/radiology_ai/CT/abd/normal/ct1.png": ("radimagenet", "ct"),
        "radimagenet/radiology_ai/MR/knee/acl/mr1.png": ("radimagenet", "mri"),
        "radimagenet/radiology_ai/US/thyroid/nodule/us1.png": ("radimagenet", "ultrasound"),
        "Quilt/quilt_1m/q1.jpg": ("quilt", "pathology"),
        "ROCOV2/train/ROCOv2_2023_train_000001.jpg": ("rocov2", "ct"),
        "ROCOV2/train/ROCOv2_2023_train_000002.jpg": ("rocov2", ""),  # no modality concept: not stated
        "openI/image/CXR1_1_IM-0001-3001.png": ("openi", "xray")}
    first = rows["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"]
    assert first["report"] == "Chest X-ray showing pleural effusion. Fluid in the pleural space."
    assert rows["openI/image/CXR1_1_IM-0001-3001.png"]["report"] == "Normal chest. Clear lungs."


def _unimed_llava_and_retina(root):
    """llava_med/ and Retina-Datasets/ as UniMed-CLIP's docs/UniMed-DATA.md has them assembled."""
    llava = root / "llava_med"
    llava.mkdir()
    (llava / "llava_med_alignment_500k_filtered.json").write_text(json.dumps([
        {"id": "PMC1_F1", "image": "PMC1_F1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image concisely."},
            {"from": "gpt", "value": "CT scan of the chest showing a mass."}]}]))
    (llava / "llava_med_instruct_fig_captions.json").write_text(json.dumps({
        "PMC2": [{"pair_id": "PMC2_F2", "fig_caption": "MRI of the brain.\n\n",
                  "in_text_mention": [{"tokens": "The MRI (Figure 2) shows a lesion.", "start": 0}]},
                 {"pair_id": "PMC2_F3", "fig_caption": "Ultrasound of the liver.", "in_text_mention": None}],
        "PMC3": [{"fig_caption": "A figure without its pair_id."}]}))
    for name in ("PMC1_F1", "PMC2_F2", "PMC2_F3"):
        _image(llava / "images" / f"{name}.jpg")
    retina = root / "Retina-Datasets"
    notes = retina / "Retina-Annotations"
    _csv(notes / "03_IDRiD.csv", ["filename", "captions", "sentence_level_captions"],
         [["03_IDRiD/images/IDRiD_001.jpg", "['moderate diabetic retinopathy']",
           "The fundus image shows moderate diabetic retinopathy."]])
    _csv(notes / "01_EYEPACS_revised.csv", ["filename", "captions", "sentence_level_captions"],  # UniMed leaves out
         [["01_EYEPACS/train/10_left.jpeg", "['no diabetic retinopathy']", "No retinopathy."]])
    _csv(notes / "06_DEN.csv", ["image", "atributes", "categories"],
         [["06_DEN/train/1.jpg", "['left eye']", "['age-related macular degeneration', '72-year-old']"],
          ["06_DEN/train/2.jpg", "['right eye']", "['drusen//2', '60 years']"]])
    _csv(notes / "39_MM_Retinal_dataset.csv", ["image", "caption"],
         [["39_MM_Retinal/CFP/a.jpg", "Fundus photograph with drusen."], ["39_MM_Retinal/CFP/b.jpg", ""]])
    for name in ("03_IDRiD/images/IDRiD_001.jpg", "01_EYEPACS/train/10_left.jpeg", "06_DEN/train/1.jpg",
                 "06_DEN/train/2.jpg", "39_MM_Retinal/CFP/a.jpg", "39_MM_Retinal/CFP/b.jpg"):
        _image(retina / name)


def test_unimed_reads_llava_med_and_retina_as_unimed_clip_scripts(tmp_path):
    _unimed_llava_and_retina(tmp_path)
    summary = prepare_corpus("unimed", tmp_path, tmp_path / "m.jsonl")
    assert summary["skipped"] == {"empty report": 1, "malformed record": 1}  # b.jpg has no caption, PMC3 no pair_id
    rows = [(r["image"], r["report"], r["source"], r["modality"]) for r in _rows(tmp_path / "m.jsonl")]
    assert rows == [
        ("Retina-Datasets/03_IDRiD/images/IDRiD_001.jpg",
         "moderate diabetic retinopathy The fundus image shows moderate diabetic retinopathy.", "retina", "fundus"),
        ("Retina-Datasets/06_DEN/train/1.jpg", "The fundus image of age-related macular degeneration", "retina",
         "fundus"),
        ("Retina-Datasets/06_DEN/train/2.jpg", rows[2][1], "retina", "fundus"),  # no clean category: one drawn
        ("Retina-Datasets/39_MM_Retinal/CFP/a.jpg", "Fundus photograph with drusen.", "retina", "fundus"),
        ("llava_med/images/PMC1_F1.jpg", "CT scan of the chest showing a mass.", "llava_med", ""),
        ("llava_med/images/PMC2_F2.jpg", "MRI of the brain.", "llava_med", ""),
        ("llava_med/images/PMC2_F3.jpg", "Ultrasound of the liver.", "llava_med", ""),
        ("llava_med/images/PMC2_F2.jpg", "The MRI (Figure 2) shows a lesion.", "llava_med", "")]
    assert rows[2][1] in ("drusen//2", "60 years")


def test_unimed_missing_or_malformed_part_is_a_warning_and_the_rest_loads(tmp_path):
    from medmoe.data.corpora import unimed

    _unimed(tmp_path)
    _unimed_llava_and_retina(tmp_path)
    (tmp_path / "llava_med" / "llava_med_instruct_fig_captions.json").unlink()
    _csv(tmp_path / "Retina-Datasets" / "Retina-Annotations" / "06_DEN.csv", ["image", "labels"], [["x.jpg", "a"]])
    (tmp_path / "openI" / "filter_cap.json").write_text('{"annotations": [')
    out = unimed.read(tmp_path)
    assert len(out.warnings) == 3 and all(w.endswith("; part left out") for w in out.warnings)
    assert "openI/filter_cap.json: not valid JSON" in out.warnings[0]
    assert "06_DEN.csv has no column 'categories'" in out.warnings[1]
    assert "llava_med: annotation file llava_med_instruct_fig_captions.json not found" in out.warnings[2]
    sources = {r["source"] for r in out.rows}
    assert sources == {"chexpert", "radimagenet", "quilt", "rocov2", "retina", "llava_med"}  # openi's part left out
    assert [r["image"].name for r in out.rows if r["source"] == "retina"] == ["IDRiD_001.jpg", "a.jpg"]
    summary = prepare_corpus("unimed", tmp_path, tmp_path / "m.jsonl")
    assert summary["rows"] == len(out.rows) and summary["warnings"] == out.warnings


def test_unimed_warnings_reach_the_command_line(tmp_path, capsys):
    from medmoe.cli import main

    _unimed(tmp_path)
    _unimed_llava_and_retina(tmp_path)
    (tmp_path / "llava_med" / "llava_med_instruct_fig_captions.json").write_text('{"x": [{"pair_id": 1}')
    assert main(["data", "prepare", "unimed", "--root", str(tmp_path), "--out", str(tmp_path / "m.jsonl")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("medmoe: warning: ") and "llava_med_instruct_fig_captions.json" in err[0]
    assert err[0].endswith("; part left out")


def test_unimed_wrong_layout(tmp_path):
    with pytest.raises(DataError, match="unimed: a UniMed source folder not found"):
        prepare_corpus("unimed", tmp_path, tmp_path / "m.jsonl")
    (tmp_path / "Quilt").mkdir()
    with pytest.raises(DataError, match="quilt: annotation file quilt_1M_lookup.csv not found"):
        prepare_corpus("unimed", tmp_path, tmp_path / "m.jsonl")


def test_no_usable_row_is_an_error(tmp_path):
    _iu(tmp_path)
    for png in (tmp_path / "NLMCXR_png").iterdir():
        png.unlink()
    with pytest.raises(DataError, match="iu-xray: no usable row"):
        prepare_corpus("iu-xray", tmp_path, tmp_path / "m.jsonl")


def test_cli_prepare(tmp_path, capsys):
    from medmoe.cli import main

    _iu(tmp_path / "iu")
    out, summary = tmp_path / "m.jsonl", tmp_path / "s.json"
    assert main(["data", "prepare", "iu-xray", "--root", str(tmp_path / "iu"), "--out", str(out),
                 "--json", str(summary)]) == 0
    printed = capsys.readouterr().out
    assert "iu-xray: 3 rows" in printed and "skipped: empty report 1, report without image 1" in printed
    assert json.loads(summary.read_text())["per_modality"] == {"xray": 3}
    assert main(["data", "prepare", "mimic-cxr", "--root", str(tmp_path / "iu"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mimic-cxr-2.0.0-split.csv[.gz] not found" in err
    assert main(["data", "prepare", "openi", "--root", str(tmp_path), "--out", str(out)]) == 2
    assert "unknown dataset 'openi'" in capsys.readouterr().err
