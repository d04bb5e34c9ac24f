"""UniMed (Khattak et al., UniMed-CLIP, 2024): the sources and caption annotation files that
github.com/mbzuai-oryx/UniMed-CLIP (docs/UniMed-DATA.md) has a user assemble under one $DATA folder,
read as its ``data_prepration_scripts`` read them. Every source is optional; at least one is needed.

=================  ==============================================================  ===============
folder under ROOT  annotation file (as UniMed publishes it) and images             modality
=================  ==============================================================  ===============
CheXpert-v1.0-small  chexpert_with_captions_only_frontal_view.csv; paths in it        x-ray
mimic-cxr-jpg      2.0.0/files/mimic_cxr_with_captions_and_reports_only_frontal_view  x-ray
                   .csv (captions + report); paths relative to mimic-cxr-jpg/
openI              filter_cap.json + openai_refined_concepts.json; image/<id>.png    x-ray
chest_xray8        Chest-Xray8_with_captions.csv; images/                           x-ray
radimagenet        radiology_ai/radimagenet_with_captions_training_set.csv         CT/MR/US from
                                                                                   the image path
Retina-Datasets    Retina-Annotations/*.csv (filename, captions, sentence_level_…)  fundus
Quilt              quilt_1M_lookup.csv (caption, image_path); quilt_1m/             pathology
pmc_oa             pmc_oa.jsonl; caption_T060_filtered_top4_sep_v0_subfigures/      not stated
ROCOV2             train_captions.csv (ID, Caption); train/<ID>.jpg                 from
                                                                                   train_concepts*.csv
llava_med          llava_med_alignment_500k_filtered.json,                          not stated
                   llava_med_instruct_fig_captions.json; images/
=================  ==============================================================  ===============

The CSVs with Python-list cells (``"['train/patient1/...jpg']"``) are read by position as UniMed's
scripts read them: file name list, labels, captions list (, report). A row's captions are joined
into its report. UniMed is training data without a split: a seeded split by image.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from ...errors import DataError
from ..tables import read_cells, read_rows
from . import pmc_oa
from .common import Collection, child, layout_error, seeded_split

# ROCOv2's modality concepts (UMLS CUIs) -> modality; ROCOv2 states one per image in its concept files
ROCOV2_MODALITY_CUIS = {"C1306645": "xray", "C0034571": "xray", "C0026606": "xray", "C0040405": "ct",
                        "C0024485": "mri", "C0041618": "ultrasound"}
RADIMAGENET_FOLDERS = {"CT": "ct", "MR": "mri", "US": "ultrasound"}  # radiology_ai/CT/... in its image paths


def _rows(path: Path) -> list[list[str]]:
    """The data rows of a CSV with a header line, as lists of cells."""
    return read_cells(path)[1:]


def _listed(cell: str) -> list[str]:
    """A Python-list cell -> its strings; a plain string -> [it]."""
    cell = (cell or "").strip()
    if cell.startswith("["):
        try:
            value = ast.literal_eval(cell)
        except (ValueError, SyntaxError):
            return []
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else []
    return [cell] if cell else []


def _annotation(folder: Path, pattern: str, source: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise DataError(f"unimed: {source}: annotation file {pattern} not found in {folder} (see UniMed-DATA.md)")
    return found[0]


def _listed_csv(out, folder, pattern, images, source, modality=None, report_column=None, seed=0):
    for row in _rows(_annotation(folder, pattern, source)):
        names = _listed(row[0]) if row else []
        captions = _listed(row[2]) if len(row) > 2 else []
        if report_column is not None and len(row) > report_column and row[report_column].strip():
            captions.append(row[report_column])
        name = names[0] if names else ""
        found = modality or next((RADIMAGENET_FOLDERS[p] for p in Path(name).parts if p in RADIMAGENET_FOLDERS), None)
        out.add(images / name if name else None, " ".join(captions), seeded_split(f"{source}/{name}", seed),
                modality=found, source=source)


def _chexpert(out, folder, seed):
    _listed_csv(out, folder, "chexpert_with_captions_only_frontal_view.csv", folder, "chexpert", "xray", seed=seed)


def _mimic(out, folder, seed):
    _listed_csv(out, folder, "**/mimic_cxr_with_captions_and_reports_only_frontal_view.csv", folder, "mimic_cxr",
                "xray", report_column=3, seed=seed)


def _chest_xray8(out, folder, seed):
    _listed_csv(out, folder, "Chest-Xray8_with_captions.csv", folder / "images", "chest_xray8", "xray", seed=seed)


def _radimagenet(out, folder, seed):
    _listed_csv(out, folder, "**/radimagenet_with_captions_training_set.csv", folder, "radimagenet", seed=seed)


def _openi(out, folder, seed):
    originals = json.loads(_annotation(folder, "filter_cap.json", "openi").read_text(encoding="utf-8"))["annotations"]
    refined = json.loads(_annotation(folder, "openai_refined_concepts.json", "openi").read_text(encoding="utf-8"))
    for original, extra in zip(originals, refined["refined_captions"]):
        name = str(original.get("image_id") or "")
        out.add(folder / "image" / f"{name}.png" if name else None, " ".join([original.get("caption") or "", *extra]),
                seeded_split(f"openi/{name}", seed), modality="xray", source="openi")


def _retina(out, folder, seed):
    annotations = folder / "Retina-Annotations"
    tables = sorted(annotations.glob("*.csv"))
    if not tables:
        raise DataError(f"unimed: retina: no annotation CSV in {annotations} (see UniMed-DATA.md)")
    for table in tables:
        for row in read_rows(table, "unimed"):
            name = (row.get("filename") or "").strip()
            captions = _listed(row.get("captions") or "") + [row.get("sentence_level_captions") or ""]
            out.add(folder / name if name else None, " ".join(captions), seeded_split(f"retina/{name}", seed),
                    modality="fundus", source="retina")


def _quilt(out, folder, seed):
    for row in _rows(_annotation(folder, "quilt_1M_lookup.csv", "quilt")):
        name = row[2].strip() if len(row) > 2 else ""
        out.add(folder / "quilt_1m" / name if name else None, row[1] if len(row) > 1 else "",
                seeded_split(f"quilt/{name}", seed), modality="pathology", source="quilt")


def _pmc_oa(out, folder, seed):
    images = pmc_oa.image_folder(folder)
    if images is None:
        raise DataError(f"unimed: pmc_oa: image folder {pmc_oa.SUBFIGURES}/ not found in {folder}")
    records = read_rows(_annotation(folder, "pmc_oa.jsonl", "pmc_oa"), "unimed")
    pmc_oa.add_records(out, records, images, lambda r: seeded_split(f"pmc_oa/{r.get('image')}", seed), source="pmc_oa")


def _rocov2(out, folder, seed):
    modality = {}
    for concepts in sorted(folder.glob("train_concepts*.csv")):
        for row in _rows(concepts):
            found = {ROCOV2_MODALITY_CUIS[c.strip()] for c in (row[1] if len(row) > 1 else "").split(";")
                     if c.strip() in ROCOV2_MODALITY_CUIS}
            if len(found) == 1:
                modality[row[0].strip()] = found.pop()
    for row in _rows(_annotation(folder, "train_captions.csv", "rocov2")):
        image_id = row[0].strip() if row else ""
        out.add(folder / "train" / f"{image_id}.jpg" if image_id else None, row[1] if len(row) > 1 else "",
                seeded_split(f"rocov2/{image_id}", seed), modality=modality.get(image_id), source="rocov2")


def _llava_med(out, folder, seed):
    for name in ("llava_med_alignment_500k_filtered.json", "llava_med_instruct_fig_captions.json"):
        for record in json.loads(_annotation(folder, name, "llava_med").read_text(encoding="utf-8")):
            turns = record.get("conversations") or []
            image = str(record.get("image") or "")
            out.add(folder / "images" / image if image else None, turns[1].get("value", "") if len(turns) > 1 else "",
                    seeded_split(f"llava_med/{image}", seed), source="llava_med")


# (folder names under ROOT, case-insensitive) -> reader
SOURCES = [(("CheXpert-v1.0-small",), _chexpert), (("mimic-cxr-jpg",), _mimic), (("openI", "openi"), _openi),
           (("chest_xray8",), _chest_xray8), (("radimagenet",), _radimagenet), (("Retina-Datasets",), _retina),
           (("Quilt",), _quilt), (("pmc_oa",), _pmc_oa), (("ROCOV2",), _rocov2), (("llava_med",), _llava_med)]
LAYOUT = "one or more of " + ", ".join(names[0] + "/" for names, _ in SOURCES) + " as in UniMed-CLIP's docs/UniMed-DATA.md"


def read(root: Path, seed: int = 0) -> Collection:
    found = [(child(root, *names), reader) for names, reader in SOURCES]
    found = [(folder, reader) for folder, reader in found if folder is not None and folder.is_dir()]
    if not found:
        raise layout_error("unimed", root, "a UniMed source folder", LAYOUT)
    out = Collection("unimed")
    for folder, reader in found:
        reader(out, folder, seed)
    return out
