import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmoe.cli import main
from medmoe.errors import ConfigError
from medmoe.data.labelling import ModalityRules, combine, label_manifest, label_report

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
    ('{"fallback": {"xray": {"(": 1}}}', "invalid regex '('"),
    ('{"cues": {"ct": {"(unclosed": 5}}}', "invalid regex '(unclosed'"),
    ('{"cues": {"ct": {"FDG": "high"}}}', "must be a number"),
    ('{"reference": ["a*"]}', "matches empty text"),
    ('{"direct": "CT shows"}', "'direct' must be a list of regexes"),
    ('{"mention_factor": -1}', "'mention_factor' must be a number >= 0"),
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
                      "per_modality": {"xray": 1, "ct": 1, "mri": 1, "unknown": 1},
                      "modality_source": {"given": 1, "dicom": 0, "report": 2, "image": 0, "unknown": 1}}
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
    assert main(["data", "label-modality", str(manifest), "--out", str(out), "--json", str(summary)]) == 0
    printed = capsys.readouterr().out
    assert "5 rows" in printed and "  xray         1" in printed and "  unknown      1" in printed
    assert "given 1, filled from the report 2, unknown 1" in printed
    assert json.loads(summary.read_text())["from_report"] == 2
    assert json.loads(out.read_text().splitlines()[0])["image"] == "../img/a.png"


def test_cli_errors(tmp_path, capsys):
    assert main(["data", "label-modality", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest not found" in err
    manifest = _jsonl(tmp_path / "m.jsonl", ROWS)
    bad = tmp_path / "r.json"
    bad.write_text('{"cues": {"ct": {"[": 1}}}')
    assert main(["data", "label-modality", str(manifest), "--out", str(tmp_path / "o.jsonl"), "--rules", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "r.json" in err and "invalid regex" in err
    assert not (tmp_path / "o.jsonl").exists()


# Chest radiograph reports as IU X-ray / MIMIC-CXR write them (written for these tests): most never
# name the modality. And the traps: CT, MRI and ultrasound reports that share their findings.
CHEST_REPORTS = [
    "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
    "Heart size and mediastinal contour are within normal limits. No focal airspace consolidation, pleural "
    "effusion, or pneumothorax. No acute bony abnormality.",
    "PA and lateral views of the chest were obtained. Lung volumes are low. There is no focal consolidation, "
    "pleural effusion or pneumothorax. The costophrenic angles are sharp.",
    "Portable AP upright view of the chest. Left-sided PICC terminates in the lower SVC. Mild pulmonary vascular "
    "congestion. No pneumothorax.",
    "Stable cardiomegaly. Hyperexpanded lungs with flattening of the hemidiaphragms, consistent with emphysema.",
    "Right lower lobe opacity concerning for pneumonia. Small right pleural effusion.",
    "Normal chest.",
    "No active disease.",
    "Low lung volumes with bronchovascular crowding. No focal consolidation.",
    "Left basilar atelectasis. Tortuous aorta. Trachea is midline.",
    "Heart size is upper limits of normal. There is mild bibasilar atelectasis. Median sternotomy wires are intact.",
    "Lungs are hyperexpanded. No infiltrates. Heart and mediastinum normal.",
    "Interstitial markings are diffusely prominent. No pleural effusion.",
    "Calcified aortic knob. Single frontal view of the chest shows no acute process.",
]
TRAPS = [  # (report, its modality, or None where the text alone cannot tell)
    ("Lung windows demonstrate no consolidation, pleural effusion or pneumothorax. No mediastinal "
     "lymphadenopathy.", "ct"),
    ("Bilateral ground-glass opacities with a peripheral distribution, consistent with viral pneumonia.", "ct"),
    ("Centrilobular emphysema. Calcified granuloma in the left upper lobe. No pleural effusion.", "ct"),
    ("Axial contrast-enhanced images show a small right pleural effusion with adjacent atelectasis.", None),
    ("Hypoattenuating lesion in the right hepatic lobe. Small bilateral pleural effusions and bibasilar "
     "atelectasis.", None),
    ("Cardiac MRI: normal left ventricular size and function. No late gadolinium enhancement. Small pleural "
     "effusion.", "mri"),
    ("T2 hyperintense signal in the thoracic spinal cord. Heart size is normal.", "mri"),
    ("Lung ultrasound: multiple B-lines bilaterally, small anechoic pleural effusion, lung sliding present.",
     "ultrasound"),
    ("Pleural effusion measuring 3 cm in depth, anechoic with no septations.", "ultrasound"),
]


@pytest.mark.parametrize("text", CHEST_REPORTS)
def test_chest_radiograph_reports_are_xray(text, rules):
    modality, scores = rules.label_report(text)
    assert modality == "xray", scores


@pytest.mark.parametrize("text, expected", TRAPS)
def test_ct_mri_ultrasound_traps_are_never_xray(text, expected, rules):
    modality, scores = rules.label_report(text)
    assert modality in (expected, None), scores  # right, or undecided; never another modality


# ----------------------------------------------------------------------------- --images

@pytest.fixture
def one_thread():
    """Small CNNs train several times faster on one thread than on two of a shared, busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _picture(kind, rng):
    """A tiny 'modality': a bright chest-like field (xray) or a disc of body in black air (ct)."""
    y, x = np.mgrid[:48, :48]
    if kind == "xray":
        image = 0.55 + 0.3 * np.cos((x - 24) / 9.0) * (y / 48)
    else:
        image = np.where((x - 24) ** 2 + (y - 24) ** 2 < 18 ** 2, 0.45, 0.0)
    return np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1)


def _image_manifest(tmp_path, rows):
    """rows: (picture kind or a path, report) -> manifest.jsonl with PNGs under img/."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    lines = []
    for n, (kind, report) in enumerate(rows):
        if kind in ("xray", "ct"):
            Image.fromarray((_picture(kind, rng) * 255).astype(np.uint8)).save(tmp_path / "img" / f"{n}.png")
            lines.append({"image": f"img/{n}.png", "report": report})
        else:
            lines.append({"image": str(kind), "report": report})
    return _jsonl(tmp_path / "m.jsonl", lines, broken=False)


@pytest.mark.slow  # trains two small CNNs and reads a DICOM: 5-14 s on 2 busy cores
def test_images_fill_unknown_rows_question_contradictions_and_read_dicom_tags(tmp_path, one_thread):
    import pydicom.data

    rows = ([("xray", "PA chest radiograph: clear lungs.")] * 20 + [("ct", "Axial CT: normal.")] * 20
            + [("xray", "Stable appearance."), ("ct", "Stable appearance."),  # unknown text: the image decides
               ("xray", "CT of the abdomen: unremarkable."),  # named directly: the text stands, questioned
               ("xray", "Hypoattenuating lesion."),  # one CT word against the image: nobody wins, unknown
               (pydicom.data.get_testdata_file("MR_small.dcm"), "Stable appearance."),  # DICOM Modality MR
               (tmp_path / "missing.png", "No change.")])
    manifest = _image_manifest(tmp_path, rows)
    counts = label_manifest(manifest, tmp_path / "o.jsonl", images=True, fill_probability=0.9,
                            override_probability=0.9)
    out = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [(r["modality"], r["modality_source"]) for r in out[40:]] == [
        ("xray", "image"), ("ct", "image"), ("ct", "report"), ("", "unknown"), ("mri", "dicom"), ("", "unknown")]
    assert counts["modality_source"] == {"given": 0, "dicom": 1, "report": 41, "image": 2, "unknown": 2}
    classifier = counts["image_classifier"]
    assert classifier["trained"] and classifier["trained_on"] == {"ct": 22, "xray": 20}
    assert classifier["unreadable_images"] == 1 and classifier["cv_accuracy"] >= 0.9
    assert [(d["row"], d["text_label"], d["image_label"], d["outcome"], d["overridden"])
            for d in counts["disagreements"]] == [(43, "ct", "xray", "ct", False), (44, "ct", "xray", None, False)]
    assert counts["disagreements"][1]["probability"] > 0.9 > counts["disagreements"][1]["combined"]


def test_images_need_two_labelled_modalities(tmp_path, capsys):
    rows = [("xray", "PA chest radiograph: clear lungs.")] * 6 + [("ct", "Stable appearance.")]
    manifest = _image_manifest(tmp_path, rows)
    out, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    assert main(["data", "label-modality", str(manifest), "--out", str(out), "--images", "--json", str(summary)]) == 0
    assert "image classifier not trained" in capsys.readouterr().out
    counts = json.loads(summary.read_text())
    assert not counts["image_classifier"]["trained"] and counts["modality_source"]["unknown"] == 1


def test_cli_images_prints_sources(tmp_path, capsys, one_thread):
    rows = [("xray", "PA chest radiograph: clear lungs.")] * 6 + [("ct", "Axial CT: normal.")] * 6 + [
        ("ct", "Stable appearance.")]
    manifest = _image_manifest(tmp_path, rows)
    assert main(["data", "label-modality", str(manifest), "--out", str(tmp_path / "o.jsonl"), "--images"]) == 0
    printed = capsys.readouterr().out
    assert "with images: from DICOM tags 0, from the image 1" in printed and "out-of-fold accuracy" in printed
    assert main(["data", "label-modality", str(manifest), "--out", str(tmp_path / "o.jsonl"), "--images",
                 "--fill-probability", "1.5"]) == 2
    assert "probabilities must be in (0, 1]" in capsys.readouterr().err


def _head(kind, rng, side=64):
    """A head in black air at a random place and size, two rings between the grey brain and a grey rim:
    CT a bright skull inside dark soft tissue, MRI a dark skull inside bright fat. The same grey levels
    in about the same amounts, so only their order tells CT from MRI: not the layout of a thumbnail,
    nor its histogram or edges (the old logistic regression on them: 0.73 out of fold)."""
    y, x = np.mgrid[:side, :side] / side
    cx, cy = rng.uniform(0.38, 0.62, 2)
    d = np.hypot(x - cx, y - cy) / rng.uniform(0.3, 0.38)
    inner, outer = (0.95, 0.05) if kind == "ct" else (0.05, 0.95)
    image = np.select([d < 0.6, d < 0.75, d < 0.87, d < 1.0], [0.45, inner, outer, 0.45], 0.0) * rng.uniform(0.8, 1.2)
    return np.clip(image + rng.normal(0, 0.04, image.shape), 0, 1)


@pytest.mark.slow  # trains six small CNNs: 4-14 s on 2 busy cores
def test_image_classifier_tells_ct_from_mri_by_structure_and_is_seeded(tmp_path, one_thread):
    """Issue 15: the thumbnail classifier confused CT and MRI. The CNN tells these apart out of fold."""
    from medmoe.data.image_modality import image_thumbnail, image_votes

    rng, thumbnails = np.random.default_rng(1), []
    for n in range(80):
        Image.fromarray((_head("ct" if n % 2 else "mri", rng) * 255).astype(np.uint8)).save(tmp_path / f"{n}.png")
        thumbnails.append(image_thumbnail(tmp_path / f"{n}.png"))
    thumbnails, labels = np.stack(thumbnails), ["ct" if n % 2 else "mri" for n in range(80)]
    votes = image_votes(thumbnails, labels[:70] + [None] * 10, seed=3)
    assert votes.classes == ["ct", "mri"] and votes.trained_on == {"ct": 35, "mri": 35}
    assert votes.cv_accuracy >= 0.9
    unseen = [votes.classes[i] for i in votes.probabilities[70:].argmax(1)]
    assert sum(u == t for u, t in zip(unseen, labels[70:])) >= 9
    few = labels[:12] + [None] * 4
    assert np.array_equal(image_votes(thumbnails[:16], few, seed=3).probabilities,
                          image_votes(thumbnails[:16], few, seed=3).probabilities)


@pytest.mark.parametrize("text_label, scores, image, expected", [
    ("ct", {"ct": 7.5}, [0.99, 0.01], "ct"),  # named directly: the text stands against a fairly sure image
    ("ct", {"ct": 3.0}, [0.99, 0.01], None),  # one CT-ish word against a fairly sure x-ray image: nobody wins
    ("ct", {"ct": 3.0}, [0.9999, 0.0001], "xray"),  # ... against a sure one: the image wins
    ("ct", {"ct": 7.5}, [1.0, 0.0], None),  # a sure image against a direct name: nobody wins
    ("ct", {"ct": 3.0}, [0.3, 0.7], "ct"),  # the image agrees
    (None, {"ct": 2.5, "xray": 1.0}, [0.95, 0.05], None),  # "observed on CT" in an x-ray note, image unsure
    (None, {"ct": 2.5, "xray": 1.0}, [0.995, 0.005], "xray"),
    (None, {}, [0.96, 0.04], "xray"),
    (None, {}, [0.9, 0.1], None),
])
def test_text_and_image_combine_and_a_contested_row_stays_unknown(text_label, scores, image, expected):
    label, probability = combine(text_label, scores, ["xray", "ct"], np.array(image), fill=0.95, override=0.95)
    assert label == expected and (label is None or label == text_label or probability >= 0.95)


# ----------------------------------------------------------------------------- hand-written corpus

CORPUS = Path(__file__).parent / "data" / "modality_corpus.jsonl"  # see tests/data/README.md


def _rates(rules, rows):
    """(right, wrong, the rows not labelled right as 'truth -> label: text' lines)."""
    labels = [rules.label_report(r["text"])[0] for r in rows]
    misses = [f"{r['modality']} -> {label}: {r['text']}" for r, label in zip(rows, labels) if label != r["modality"]]
    wrong = sum(label not in (r["modality"], None) for r, label in zip(rows, labels))
    return 1 - len(misses) / len(rows), wrong / len(rows), misses


def _corpus(split):
    return [r for r in map(json.loads, CORPUS.read_text(encoding="utf-8").splitlines()) if r["split"] == split]


def test_heldout_corpus_meets_the_labelling_goals(rules):
    """Issue 9's text-stage goals on the held-out half of the hand-written corpus: chest radiograph
    reports >= 97 % x-ray and <= 1 % another modality; mixed CT/MRI/x-ray/ultrasound captions
    (40 % never naming the modality) >= 60 % right and <= 1 % wrong, the image stage labels the rest.
    (The texts written for issue 15's failure kinds are measured by benchmarks/labeller.py.)"""
    held = [r for r in _corpus("heldout") if "trap" not in r]
    chest = [r for r in held if r["corpus"] == "chest"]
    mixed = [r for r in held if r["corpus"] == "mixed"]
    assert len(chest) >= 75 and len(mixed) >= 75
    assert {r["modality"] for r in mixed} == {"xray", "ct", "mri", "ultrasound"}
    assert sum(not r["names_modality"] for r in mixed) / len(mixed) >= 0.35
    right, wrong, misses = _rates(rules, chest)
    assert right >= 0.97 and wrong <= 0.01, "\n".join(misses)
    right, wrong, misses = _rates(rules, mixed)
    assert right >= 0.60 and wrong <= 0.01, "\n".join(misses)


@pytest.mark.parametrize("text, expected", [
    ("Mild pulmonary edema.", "xray"),  # fallback cues alone
    ("Compared with prior CT, small left pleural effusion.", "xray"),  # a reference mention does not block them
    ("Hypoattenuating liver lesion. Small left pleural effusion.", "ct"),  # a CT cue does (else x-ray 4 vs 3)
    ("Anechoic left pleural effusion.", "ultrasound"),
    ("Hypervascular lesion in the right lobe of the liver. Small right pleural effusion.", None),  # CT or MRI
    ("MRI: small left pleural effusion.", "mri"),
])
def test_fallback_cues_count_only_without_another_modality(text, expected, rules):
    modality, scores = rules.label_report(text)
    assert modality == expected, scores


def test_dev_texts_of_issue_15s_failure_kinds_are_never_labelled_wrong(rules):
    """The dev half of the texts written for each failure kind (the rules were tuned on these): the
    right modality or unknown, never another one."""
    traps = [r for r in _corpus("dev") if "trap" in r]
    assert {r["trap"] for r in traps} == {"history", "dimensions", "signal", "eye", "echo"}
    _, wrong, misses = _rates(rules, traps)
    assert wrong == 0, "\n".join(m for m in misses if " -> None: " not in m)


# The inputs that broke the text rules on the real mixed corpus (issue 15), each in a text of its
# kind: the cue does not describe this image.
ISSUE_15_TEXTS = [
    ("Bilateral reticular opacities in the lower zones, consistent with the fibrotic changes observed on "
     "high-resolution computed tomography.", "xray", "ct"),  # an x-ray note reporting the patient's CT
    ("Large heterogeneous mass measuring 9.5 x 8.9 x 13 cm in the oblique coronal, AP and craniocaudal "
     "dimensions.", "ct", "xray"),  # dimensions, not an AP radiograph or a craniocaudal mammogram
    ("Abnormal signal R. MCA territory.", "ct", "mri"),
    ("Small calcified focus near the right optic disc.", "ct", "fundus"),
    ("Contrast-enhanced axial image showing an echogenic mass in the right kidney.", "ct", "ultrasound"),
]


@pytest.mark.parametrize("text, truth, was", ISSUE_15_TEXTS)
def test_issue_15_cues_that_do_not_describe_this_image(text, truth, was, rules):
    modality, scores = rules.label_report(text)
    assert modality in (truth, None) and modality != was, scores


def test_naming_cues_count_by_how_directly_they_name_this_image(rules):
    """A naming cue (weight 5) counts x direct_factor where it names this image, x mention_factor
    where it names where something was seen, x reference_factor in history context, else x 1."""
    ct = {text: rules.label_report(text)[1]["ct"] for text in (
        "CT image shows a renal mass.", "CT abdomen: renal mass.", "Renal mass. CT.",
        "Renal mass observed on CT.", "Renal mass, unchanged from the prior CT.",
        "Renal mass; CT performed two weeks ago was normal.")}
    assert list(ct.values()) == [5 * rules.direct_factor] * 2 + [5.0, 5 * rules.mention_factor] + [
        5 * rules.reference_factor] * 2, ct
    assert rules.label_report("Chest X-ray: bilateral reticular opacities, in keeping with the fibrosis observed on "
                              "high-resolution computed tomography.")[0] == "xray"
    assert rules.label_report("HRCT confirmed the fibrosis seen on the chest radiograph.")[0] == "ct"


def test_user_context_patterns(tmp_path):
    text = "Renal mass, as per the CT."
    assert label_report(text)[0] == "ct"
    user = tmp_path / "mine.json"
    user.write_text(json.dumps({"mention": [r"\bas per\b[^.]*"], "mention_factor": 0.1}))
    modality, scores = ModalityRules.load([user]).label_report(text)
    assert modality is None and scores["ct"] == 5 * 0.1


def test_user_fallback_cues(tmp_path):
    user = tmp_path / "mine.json"
    user.write_text(json.dumps({"fallback": {"ultrasound": {r"\bgallbladder\b": 5}}}))
    rules = ModalityRules.load([user])
    assert rules.label_report("Gallbladder wall thickening.")[0] == "ultrasound"
    assert rules.label_report("Gallbladder wall thickening. Hounsfield units 20.")[0] == "ct"
