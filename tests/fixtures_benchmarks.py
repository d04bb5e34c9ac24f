"""Tiny benchmark datasets written in each publisher's exact layout (medmoe data prepare, medmoe benchmark)."""
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from medmoe.data.benchmarks import chexpert


OBSERVATIONS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices"]
ORGANS = ["heart", "left lung", "right lung", "liver", "spleen", "pancreas", "left kidney", "right kidney", "bladder",
          "left femoral head", "right femoral head"]


def picture(path: Path, value: int = 128, size=(8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)


def write_csv(path: Path, header, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def write_chexpert(root: Path, per_class: int = 6, release: str = "small") -> dict[str, str]:
    """CheXpert as unpacked, ``release`` ``small`` (CheXpert-v1.0-small/: train.csv, train/patientNNNNN/) or
    ``full``: Stanford AIMI's current download chexpertchestxrays-u20210408/ with train_cheXbert.csv and
    train_visualCheXbert.csv (Path ``CheXpert-v1.0/train/...``) beside 'CheXpert-v1.0 batch 1 (validate & csv)'
    (valid/, valid.csv) and 'batch 2 (train 1)' to 'batch 4 (train 3)', which split the patient folders in
    consecutive runs. Returns {trap name: Path} of rows that must not be selected."""
    prefix = "CheXpert-v1.0-small/train" if release == "small" else "CheXpert-v1.0/train"
    download = root / "chexpertchestxrays-u20210408"
    total, rows, n = 5 * per_class + 4, [], 0

    def add(view="Frontal", **labels):
        nonlocal n
        n += 1
        path = f"{prefix}/patient{n:05d}/study1/view1_{view.lower()}.jpg"
        batch = 1 + 3 * (n - 1) // total
        picture(root / path if release == "small" else
                download / f"CheXpert-v1.0 batch {batch + 1} (train {batch})" / Path(path).relative_to(prefix))
        rows.append([path, "Female", "60", view, "AP"] + [labels.get(o, "" if n % 2 else "0.0") for o in OBSERVATIONS])
        return path

    for cls in chexpert.TASKS:
        for _ in range(per_class):
            add(**{cls: "1.0", "No Finding": "0.0"})
    traps = {"two positive": add(Atelectasis="1.0", Edema="1.0"),
             "lateral": add(view="Lateral", Cardiomegaly="1.0"),
             "uncertain": add(Consolidation="1.0", Edema="-1.0"),
             "other observation": add(Edema="1.0", **{"Support Devices": "1.0"})}
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + OBSERVATIONS
    if release == "small":
        write_csv(root / "CheXpert-v1.0-small" / "train.csv", header, rows)
        return traps
    write_csv(download / "train_cheXbert.csv", header, rows)
    visual = [r[:5] + ["1.0" if v in ("1.0", "-1.0") else "0.0" for v in r[5:]] for r in rows]  # 0/1 only
    write_csv(download / "train_visualCheXbert.csv", header, visual)
    valid = download / "CheXpert-v1.0 batch 1 (validate & csv)"
    picture(valid / "valid" / "patient64541" / "study1" / "view1_frontal.jpg")
    write_csv(valid / "valid.csv", header, [["CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg", "Male", "70",
                                             "Frontal", "AP"] + ["0.0"] * len(OBSERVATIONS)])
    return traps


def write_rsna(root: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    labels, info = [], []
    for i in range(8):
        pid = f"p{i:03d}"
        if i % 2:  # pneumonia; p001 has two boxes (two rows)
            labels.append([pid, "10", "20", "30", "40", "1"])
            if i == 1:
                labels.append([pid, "50", "60", "5", "6", "1"])
            info.append([pid, "Lung Opacity"])
        else:
            labels.append([pid, "", "", "", "", "0"])
            info.append([pid, "Normal" if i % 4 else "No Lung Opacity / Not Normal"])
        ds = pydicom.dcmread(source)
        ds.PatientID = pid
        (root / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
        ds.save_as(root / "stage_2_train_images" / f"{pid}.dcm")
    write_csv(root / "stage_2_train_labels.csv", ["patientId", "x", "y", "width", "height", "Target"], labels)
    write_csv(root / "stage_2_detailed_class_info.csv", ["patientId", "class"], info)


MSCXR_HEADER = ["dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width",
                "image_height", "split"]


def write_mscxr(root: Path, version: str = "1.1.0") -> list[list[str]]:
    """MS-CXR as PhysioNet ships it: MS_CXR_Local_Alignment_v<version>.csv (one row per box; v1.0.0 without
    ``split``) beside MIMIC-CXR-JPG's files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg. Five phrases on 64 x 64
    JPEGs, each with a bright box: d1 has two boxes (two rows), d2 is a 128 x 128 copy downsized to 64 x 64
    (boxes in the full size's pixels) kept under another folder, d3's image is missing. Returns the rows."""
    rows = []
    for i, (category, phrase, boxes) in enumerate([
            ("Pneumonia", "right lower lobe pneumonia", [[8, 30, 20, 20]]),
            ("Pleural effusion", "small left pleural effusion", [[36, 40, 20, 16], [40, 20, 10, 10]]),
            ("Cardiomegaly", "enlarged heart", [[40, 60, 60, 40]]),
            ("Pneumothorax", "small apical pneumothorax", [[4, 4, 10, 10]]),
            ("Lung opacity", "patchy opacity at the left base", [[40, 44, 16, 16]])]):
        dicom, full = f"d{i}", 128 if i == 2 else 64
        path = f"files/p1{i}/p1{i}000001/s5{i}000001/{dicom}.jpg"
        for x, y, w, h in boxes:
            rows.append([dicom, category, phrase, path, x, y, w, h, full, full, "test" if i % 2 else "train"])
        if i == 3:
            continue  # the image is missing
        image = np.full((full, full), 40, np.uint8)
        for x, y, w, h in boxes:
            image[y : y + h, x : x + w] = 220
        target = root / ("downsized" if i == 2 else ".") / path
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((64, 64)).save(target, quality=95)
    header = MSCXR_HEADER if version != "1.0.0" else MSCXR_HEADER[:-1]
    write_csv(root / f"MS_CXR_Local_Alignment_v{version}.csv", header, [r[: len(header)] for r in rows])
    return rows


def ddti_outline(*points) -> str:
    """A DDTI mark's svg text: a JSON list of freehand outlines."""
    return json.dumps([{"points": [{"x": x, "y": y} for x, y in points], "annotation": {}, "regionType": "freehand"}])


def write_ddti_case(folder: Path, case: int, tirads: str, svgs: list[str]) -> Path:
    """``<case>.xml`` as DDTI publishes it, one ``<mark>`` per svg (image 1, 2, ...)."""
    marks = "".join(f"<mark><image>{n}</image><svg>{svg}</svg></mark>" for n, svg in enumerate(svgs, start=1))
    path = folder / f"{case}.xml"
    path.write_text(f"<?xml version='1.0' encoding='UTF-8'?><case><number>{case}</number><age>40</age><sex>F</sex>"
                    f"<composition>solid</composition><echogenicity>hypoechogenicity</echogenicity>"
                    f"<margins>well defined</margins><calcifications>non</calcifications><tirads>{tirads}</tirads>"
                    f"<reportbacaf/><reporteco/>{marks}</case>")
    return path


def write_ddti(root: Path, extra: int = 0) -> None:
    """DDTI's cases 1-5 (3 without a TI-RADS), then ``extra`` one-image cases, benign and malignant in turn."""
    root.mkdir(parents=True)
    svg = ddti_outline((2, 2), (12, 2), (12, 10), (2, 10))
    cases = [(1, "2", 1), (2, "4b", 2), (3, "", 1), (4, "5", 1), (5, "3", 1)]
    for case, tirads, images in cases + [(6 + i, "5" if i % 2 else "2", 1) for i in range(extra)]:
        write_ddti_case(root, case, tirads, [svg] * images)
        for n in range(1, images + 1):
            picture(root / f"{case}_{n}.jpg", size=(20, 16))


def write_busi(root: Path) -> None:
    base = root / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant", "normal"):
        for n in (1, 2, 3):
            picture(base / cls / f"{cls} ({n}).png", 100)
            mask = np.zeros((8, 8), np.uint8)
            if cls != "normal":
                mask[:4, :4] = 255
            picture(base / cls / f"{cls} ({n})_mask.png", 0)
            Image.fromarray(mask).save(base / cls / f"{cls} ({n})_mask.png")
    extra = np.zeros((8, 8), np.uint8)
    extra[6:, 6:] = 255
    Image.fromarray(extra).save(base / "benign" / "benign (2)_mask_1.png")


def write_mrnet(root: Path) -> None:
    base = root / "MRNet-v1.0"
    for part, exams in (("train", range(0, 8)), ("valid", range(8, 10))):
        for exam in exams:
            for plane in ("axial", "sagittal"):
                volume = np.stack([np.full((16, 16), 10 * s + exam, np.uint8) for s in range(5)])
                (base / part / plane).mkdir(parents=True, exist_ok=True)
                np.save(base / part / plane / f"{exam:04d}.npy", volume)
        for task in ("acl", "meniscus"):
            write_csv(base / f"{part}-{task}.csv", None, [[f"{e:04d}", str(e % 2)] for e in exams])


def write_medimeta(root: Path, folder: str = "organs_axial") -> None:
    import yaml

    base = root / folder
    labels = np.array([i % 11 for i in range(12)])
    for i in range(12):
        (base / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(base / "images" / f"{i:06d}.tiff")
    (base / "task_labels").mkdir()
    np.save(base / "task_labels" / "organ classification.npy", labels)
    (base / "splits").mkdir()
    for split, ids in (("train", range(0, 8)), ("val", range(8, 10)), ("test", range(10, 12))):
        (base / "splits" / f"{split}.txt").write_text("".join(f"images/{i:06d}.tiff\n" for i in ids))
    info = {"id": folder, "name": "LiTS organ slices", "domain": "CT",
            "tasks": [{"task_name": "organ classification", "task_target": "MULTICLASS_CLASSIFICATION",
                       "labels": dict(enumerate(ORGANS))}]}
    (base / "info.yaml").write_text(yaml.safe_dump(info))


def write_benchmark_root(root: Path) -> None:
    """Every benchmark dataset under ``root``, one folder each, as ``medmoe benchmark --root`` expects."""
    write_chexpert(root / "chexpert")
    write_rsna(root / "rsna-pneumonia")
    write_mscxr(root / "ms-cxr")
    write_ddti(root / "thyroid-us", extra=8)
    write_busi(root / "breast-us")
    write_mrnet(root / "mrnet")
    for view in ("axial", "coronal", "sagittal"):
        write_medimeta(root / "medimeta", f"organs_{view}")
