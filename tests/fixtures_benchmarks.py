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


def write_chexpert(root: Path, per_class: int = 6) -> dict[str, str]:
    """CheXpert-v1.0-small as unpacked; returns {trap name: Path} of rows that must not be selected."""
    folder, rows, n = root / "CheXpert-v1.0-small", [], 0

    def add(view="Frontal", **labels):
        nonlocal n
        n += 1
        path = f"CheXpert-v1.0-small/train/patient{n:05d}/study1/view1_{view.lower()}.jpg"
        picture(root / path)
        rows.append([path, "Female", "60", view, "AP"] + [labels.get(o, "" if n % 2 else "0.0") for o in OBSERVATIONS])
        return path

    for cls in chexpert.TASKS:
        for _ in range(per_class):
            add(**{cls: "1.0", "No Finding": "0.0"})
    traps = {"two positive": add(Atelectasis="1.0", Edema="1.0"),
             "lateral": add(view="Lateral", Cardiomegaly="1.0"),
             "uncertain": add(Consolidation="1.0", Edema="-1.0"),
             "other observation": add(Edema="1.0", **{"Support Devices": "1.0"})}
    write_csv(folder / "train.csv", ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + OBSERVATIONS, rows)
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


def write_ddti(root: Path, extra: int = 0) -> None:
    """DDTI's cases 1-5 (3 without a TI-RADS), then ``extra`` one-image cases, benign and malignant in turn."""
    root.mkdir(parents=True)
    svg = json.dumps([{"points": [{"x": 2, "y": 2}, {"x": 12, "y": 2}, {"x": 12, "y": 10}, {"x": 2, "y": 10}]}])
    cases = [(1, "2", 1), (2, "4b", 2), (3, "", 1), (4, "5", 1), (5, "3", 1)]
    for case, tirads, images in cases + [(6 + i, "5" if i % 2 else "2", 1) for i in range(extra)]:
        marks = "".join(f"<mark><image>{n}</image><svg>{svg}</svg></mark>" for n in range(1, images + 1))
        (root / f"{case}.xml").write_text(f"<?xml version='1.0'?><case><number>{case}</number><age>40</age>"
                                          f"<sex>F</sex><tirads>{tirads}</tirads>{marks}</case>")
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
    write_ddti(root / "thyroid-us", extra=8)
    write_busi(root / "breast-us")
    write_mrnet(root / "mrnet")
    for view in ("axial", "coronal", "sagittal"):
        write_medimeta(root / "medimeta", f"organs_{view}")
