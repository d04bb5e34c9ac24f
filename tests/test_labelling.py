import csv
import json

import pytest

from medmoe.cli import main
from medmoe.errors import ConfigError
from medmoe.data.labelling import ModalityRules, label_manifest, label_report

REPORTS = [
    # x-ray: cue-only chest films, a comparison-context trap, mammography, a wrist film
    ("The lungs are clear. Heart size is normal. No pneumothorax.", "xray"),
    ("PA and lateral views of the chest. Cardiomediastinal silhouette within normal limits. Costophrenic angles "
     "are sharp. No acute cardiopulmonary process.", "xray"),
    ("Lungs are clear. Compared with prior CT of 2019, no change.", "xray"),
    ("Portable AP chest. Endotracheal tube tip projects 4 cm above the carina. Retrocardiac opacity, likely "
     "atelectasis.", "xray"),
    ("Bilateral CC and MLO views. Scattered fibroglandular densities. No suspicious masses or microcalcifications. "
     "BI-RADS 1.", "xray"),
    ("Frontal and lateral radiographs of the left wrist: transverse fracture of the distal radius. Soft tissue "
     "swelling.", "xray"),
    ("Kerley B lines and cephalization, consistent with interstitial edema.", "xray"),  # not lung-ultrasound B-lines
    ("No acute osseous pathology. Lungs are clear.", "xray"),  # "pathology" is not a pathology cue
    ("65-year-old man with cough. Chest radiograph shows right lower lobe consolidation.", "xray"),
    ("Indication: nodule seen on CT. Frontal chest radiograph: the nodule is not visible.", "xray"),
    # CT
    ("Contrast-enhanced axial images of the abdomen and pelvis. The liver shows a 2 cm hypoattenuating lesion "
     "measuring 15 Hounsfield units, consistent with a cyst. The adrenal glands are unremarkable.", "ct"),
    ("Non-contrast CT head: no intracranial hemorrhage, mass effect or midline shift. Gray-white differentiation "
     "is preserved.", "ct"),
    ("Filling defects in the segmental pulmonary arteries of the right lower lobe consistent with pulmonary "
     "embolism. Lung windows show scattered ground-glass opacities.", "ct"),
    ("Hyperdense focus in the left basal ganglia with surrounding low attenuation, consistent with acute "
     "hemorrhage. Streak artifact from dental hardware.", "ct"),
    # MRI
    ("There is a T2 hyperintense lesion in the right frontal white matter with diffusion restriction, without "
     "enhancement.", "mri"),
    ("FLAIR hyperintensities in the periventricular white matter. No restricted diffusion. No susceptibility "
     "artifact to suggest hemorrhage.", "mri"),
    ("Bone marrow edema in the medial femoral condyle on fat-suppressed sequences. Tear of the posterior horn of "
     "the medial meniscus.", "mri"),
    ("MRI of the prostate: PI-RADS 4 lesion in the left peripheral zone with low ADC values.", "mri"),
    ("Hypointense on T1 and hyperintense on T2 with signal dropout on opposed-phase images, consistent with an "
     "adrenal adenoma. Correlate with prior CT.", "mri"),
    ("Gradient echo images show blooming in the left thalamus, consistent with microhemorrhage.", "mri"),
    # ultrasound
    ("Hypoechoic solid nodule in the right thyroid lobe with internal vascularity on Doppler. TI-RADS 4.",
     "ultrasound"),
    ("The gallbladder contains multiple echogenic foci with posterior acoustic shadowing. Positive sonographic "
     "Murphy sign.", "ultrasound"),
    ("Single intrauterine gestational sac with yolk sac and fetal pole. Crown-rump length corresponds to 8 weeks. "
     "Fetal heart rate 160 bpm.", "ultrasound"),
    ("Noncompressible left common femoral vein with absent color flow, consistent with deep venous thrombosis.",
     "ultrasound"),
    ("Anechoic cyst in the left ovary measuring 3 cm, through-transmission present. Recommend MRI for further "
     "characterization.", "ultrasound"),
    ("Gallbladder fundus: 5 mm echogenic polyp without shadowing.", "ultrasound"),  # not an eye fundus
    # pathology
    ("H&E sections show infiltrating glands with nuclear pleomorphism and frequent mitoses, consistent with "
     "moderately differentiated adenocarcinoma.", "pathology"),
    ("Sections show colonic mucosa with crowded glands and high-grade dysplasia. Margins are free.", "pathology"),
    ("Specimen: liver, CT-guided core biopsy. Sections show hepatocytes with macrovesicular steatosis. No "
     "malignancy identified.", "pathology"),
    ("Prostate core biopsies: acinar adenocarcinoma, Gleason score 3+4=7. Perineural invasion is present. "
     "Immunohistochemistry for p63 is negative.", "pathology"),
    # fundus
    ("Optic disc with a cup-to-disc ratio of 0.7 and inferior rim thinning, suspicious for glaucoma.", "fundus"),
    ("Multiple drusen at the macula. No hemorrhage.", "fundus"),
    ("Scattered microaneurysms, dot-and-blot hemorrhages and hard exudates in all quadrants: moderate "
     "nonproliferative diabetic retinopathy.", "fundus"),
    ("Cotton-wool spots along the superior vascular arcade with arteriovenous nicking.", "fundus"),
    # unknown: no cue, only a reference mention, or two modalities named equally
    ("No acute findings.", None),
    ("", None),
    ("Normal study.", None),
    ("Stable appearance.", None),
    ("There is a 2 cm mass in the liver.", None),
    ("Compared with prior CT, no change.", None),
    ("Recommend MRI of the lumbar spine if symptoms persist.", None),
    ("Ultrasound and MRI of the pelvis: fibroid uterus.", None),
    ("Mr. Smith, 54. Left ventricular ejection fraction 55%.", None),
]


@pytest.fixture(scope="module")
def rules():
    return ModalityRules.load()


@pytest.mark.parametrize("text, expected", REPORTS)
def test_report_table(text, expected, rules):
    modality, scores = rules.label_report(text)
    assert modality == expected, scores
    assert set(scores) == {"xray", "ct", "mri", "ultrasound", "pathology", "fundus"}


def test_module_function_uses_the_builtin_rules():
    assert label_report("Hypoechoic nodule.")[0] == "ultrasound"
    assert label_report(None)[0] is None


def test_user_rules_extend_the_builtin_ones(tmp_path):
    text = "PET shows an FDG-avid node."  # no built-in cue: unknown
    assert label_report(text)[0] is None
    user = tmp_path / "mine.json"
    user.write_text(json.dumps({"_doc": "PET/CT reports", "cues": {"CT": {r"\bFDG\b|\bSUV\b": 5}}}))
    rules = ModalityRules.load([user])
    assert rules.label_report(text)[0] == "ct"
    assert rules.label_report("Hypoechoic nodule.")[0] == "ultrasound"  # built-in cues still there
    user.write_text(json.dumps({"cues": {"ultrasound": {r"\b(hypo|hyper|an|iso|hetero|homo)?echoic\b|"
                                                         r"\bechogen(ic|icity)\b|\bechotexture\b": 0}}}))
    assert ModalityRules.load(str(user)).label_report("Hypoechoic nodule.")[0] is None  # weight 0 removes a cue


@pytest.mark.parametrize("content, message", [
    ('{"cues": {"pet": {"FDG": 5}}}', "unknown modality 'pet'"),
    ('{"cues": {"ct": {"(unclosed": 5}}}', "invalid regex '(unclosed'"),
    ('{"cues": {"ct": {"FDG": "high"}}}', "must be a number"),
    ('{"reference": ["a*"]}', "matches empty text"),
    ('{"treshold": 2}', "unknown key 'treshold'"),
    ('{"cues": ', "invalid JSON"),
])
def test_bad_rules_file_is_a_config_error_naming_the_file(tmp_path, content, message):
    bad = tmp_path / "bad_rules.json"
    bad.write_text(content)
    with pytest.raises(ConfigError, match="bad_rules.json") as err:
        ModalityRules.load([bad])
    assert message in str(err.value) and "\n" not in str(err.value)


ROWS = [
    {"image": "img/a.png", "report": "Hypoechoic nodule with internal Doppler flow.", "modality": "CT", "split": "train"},
    {"image": "img/b.png", "report": "The lungs are clear. Heart size is normal.", "mask": "masks/b.png",
     "split": "train", "labels": ["normal"]},
    {"image": "img/c.png", "report": "No acute findings.", "modality": "", "split": "val"},
    {"image": "img/d.png", "report": "FLAIR hyperintense lesion.", "modality": "PET", "split": "test"},
]


def _jsonl(path, rows, broken=True):
    lines = [json.dumps(r) for r in rows]
    if broken:
        lines.insert(2, '{"image": "img/x.png", "report": ')  # invalid JSON
    path.write_text("\n".join(lines) + "\n")
    return path


def test_label_manifest_jsonl_in_place(tmp_path):
    manifest = _jsonl(tmp_path / "m.jsonl", ROWS)
    counts = label_manifest(manifest, tmp_path / "labelled.jsonl", ModalityRules.load())
    assert counts == {"rows": 5, "given": 1, "from_report": 2, "unknown": 1, "unparseable": 1,
                      "per_modality": {"xray": 1, "ct": 1, "mri": 1, "unknown": 1}}
    lines = (tmp_path / "labelled.jsonl").read_text().splitlines()
    assert lines[2] == '{"image": "img/x.png", "report": '  # copied through unchanged
    out = [json.loads(line) for i, line in enumerate(lines) if i != 2]
    assert [(r["modality"], r["modality_source"]) for r in out] == [
        ("ct", "given"), ("xray", "report"), ("", "unknown"), ("mri", "report")]  # "PET" is not a valid modality
    assert out[0]["image"] == "img/a.png" and out[1]["labels"] == ["normal"] and out[1]["mask"] == "masks/b.png"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_label_manifest_overwrite_relabels_given_rows(tmp_path):
    manifest = _jsonl(tmp_path / "m.jsonl", ROWS, broken=False)
    counts = label_manifest(manifest, tmp_path / "o.jsonl", ModalityRules.load(), overwrite=True)
    first = json.loads((tmp_path / "o.jsonl").read_text().splitlines()[0])
    assert (first["modality"], first["modality_source"]) == ("ultrasound", "report")
    assert counts["given"] == 0 and counts["from_report"] == 3


def test_label_manifest_csv_to_another_folder_rewrites_paths(tmp_path):
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "m.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "report", "modality", "mask", "labels"])
        writer.writerow(["img/a.png", "Optic disc with a cup-to-disc ratio of 0.6.", "", "", ""])
        writer.writerow(["img/b.png", "Chest radiograph: clear.", "DX", "masks/b.png", "normal;clear"])
        writer.writerow(["/abs/c.png", "Stable.", "", "", ""])
    out = tmp_path / "labels" / "deep" / "m.csv"
    counts = label_manifest(manifest, out, ModalityRules.load())
    assert counts["per_modality"] == {"xray": 1, "fundus": 1, "unknown": 1} and counts["given"] == 1
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "report", "modality", "mask", "labels", "modality_source"]
    assert [(r["modality"], r["modality_source"]) for r in rows] == [
        ("fundus", "report"), ("xray", "given"), ("", "unknown")]
    assert rows[0]["image"] == "../../data/img/a.png" and rows[1]["mask"] == "../../data/masks/b.png"
    assert rows[2]["image"] == "/abs/c.png" and rows[1]["labels"] == "normal;clear"
    assert (out.parent / rows[0]["image"]).resolve() == (tmp_path / "data" / "img" / "a.png").resolve()


def test_label_manifest_jsonl_to_csv(tmp_path):
    manifest = _jsonl(tmp_path / "m.jsonl", ROWS)
    label_manifest(manifest, tmp_path / "m.csv", ModalityRules.load())
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[2]["unparsed"] == '{"image": "img/x.png", "report": '
    assert json.loads(rows[1]["labels"]) == ["normal"] and rows[1]["modality"] == "xray"


def test_cli_prints_counts_and_unknown(tmp_path, capsys):
    manifest = _jsonl(tmp_path / "m.jsonl", ROWS)
    out, summary = tmp_path / "out" / "m.jsonl", tmp_path / "counts.json"
    assert main(["label-modality", str(manifest), "--out", str(out), "--json", str(summary)]) == 0
    printed = capsys.readouterr().out
    assert "5 rows" in printed and "  xray         1" in printed and "  unknown      1" in printed
    assert "given 1, filled from the report 2, unknown 1" in printed
    assert json.loads(summary.read_text())["from_report"] == 2
    assert json.loads(out.read_text().splitlines()[0])["image"] == "../img/a.png"


def test_cli_errors(tmp_path, capsys):
    assert main(["label-modality", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest not found" in err
    manifest = _jsonl(tmp_path / "m.jsonl", ROWS)
    bad = tmp_path / "r.json"
    bad.write_text('{"cues": {"ct": {"[": 1}}}')
    assert main(["label-modality", str(manifest), "--out", str(tmp_path / "o.jsonl"), "--rules", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "r.json" in err and "invalid regex" in err
    assert not (tmp_path / "o.jsonl").exists()
