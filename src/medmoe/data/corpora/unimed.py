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
Retina-Datasets    Retina-Annotations/*.csv (filename, captions, sentence_level_…;  fundus
                   06_DEN.csv: image, atributes, categories; 39_MM_Retinal_dataset
                   .csv: image, caption); paths relative to Retina-Datasets/
Quilt              quilt_1M_lookup.csv (caption, image_path); quilt_1m/             pathology
pmc_oa             pmc_oa.jsonl; caption_T060_filtered_top4_sep_v0_subfigures/      not stated
ROCOV2             train_captions.csv (ID, Caption); train/<ID>.jpg                 from
                                                                                   train_concepts*.csv
llava_med          llava_med_alignment_500k_filtered.json ([{image, conversations}]),  not stated
                   llava_med_instruct_fig_captions.json ({key: [{pair_id,
                   fig_caption, in_text_mention}]}); images/
=================  ==============================================================  ===============

The CSVs with Python-list cells (``"['train/patient1/...jpg']"``) are read by position as UniMed's
scripts read them: file name list, labels, captions list (, report). A row's captions are joined
into its report. The retina files UniMed-CLIP leaves out (``RETINA_LEFT_OUT``: the ``_revised`` copies of
01_EYEPACS, 07_LAG and 28_OIA-DDR) are left out here too. Each annotation file is a part: one that is
missing or malformed is a warning line (``Collection.warnings``) and the other parts still load; a
record not of its file's shape is skipped and counted. UniMed is training data without a split: a
seeded split by image.
"""
from __future__ import annotations

import ast
import json
import random
from pathlib import Path

from ...errors import DataError
from ...seeding import derive_seed
from ..tables import read_cells, read_rows
from . import pmc_oa
from .common import Collection, child, layout_error, seeded_split

# ROCOv2's modality concepts (UMLS CUIs) -> modality; ROCOv2 states one per image in its concept files
ROCOV2_MODALITY_CUIS = {"C1306645": "xray", "C0034571": "xray", "C0026606": "xray", "C0040405": "ct",
                        "C0024485": "mri", "C0041618": "ultrasound"}
RADIMAGENET_FOLDERS = {"CT": "ct", "MR": "mri", "US": "ultrasound"}  # radiology_ai/CT/... in its image paths
# Retina-Annotations files that UniMed-CLIP's retina_webdataset_part1.py leaves out
RETINA_LEFT_OUT = ("01_EYEPACS_revised.csv", "07_LAG_revised.csv", "28_OIA-DDR_revised.csv")
LLAVA_ALIGNMENT, LLAVA_INSTRUCT = "llava_med_alignment_500k_filtered.json", "llava_med_instruct_fig_captions.json"


class UniMedCollection(Collection):
    """The rows of every part that could be read, and a warning for each part left out."""

    def part(self, reader, *args) -> None:
        """Run one part's reader; a missing or malformed part (a DataError) becomes a warning."""
        try:
            reader(self, *args)
        except DataError as exc:
            self.warnings.append(f"{exc}; part left out")

    def malformed(self, count: int = 1) -> None:
        """Count records that are not of the part's shape as skipped."""
        if count:
            self.skipped["malformed record"] += count


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


def _json(path: Path, shape: type):
    """The JSON value of an annotation file, which must be a ``shape`` (dict or list)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"unimed: {path}: not valid JSON ({exc})") from None
    if not isinstance(value, shape):
        raise DataError(f"unimed: {path}: a JSON {'object' if shape is dict else 'list'} expected, "
                        f"found {type(value).__name__}")
    return value


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
    originals = _json(_annotation(folder, "filter_cap.json", "openi"), dict).get("annotations")
    refined = _json(_annotation(folder, "openai_refined_concepts.json", "openi"), dict).get("refined_captions")
    if not isinstance(originals, list) or not isinstance(refined, list):
        raise DataError(f"unimed: openi: {folder} needs filter_cap.json's annotations list and "
                        "openai_refined_concepts.json's refined_captions list")
    for original, extra in zip(originals, refined):
        if not isinstance(original, dict) or not isinstance(extra, list):
            out.malformed()
            continue
        name = str(original.get("image_id") or "")
        out.add(folder / "image" / f"{name}.png" if name else None,
                " ".join([str(original.get("caption") or ""), *map(str, extra)]),
                seeded_split(f"openi/{name}", seed), modality="xray", source="openi")


def _fundus(out, folder, name: str, captions: list[str], seed: int) -> None:
    name = name.strip()
    out.add(folder / name if name else None, " ".join(captions), seeded_split(f"retina/{name}", seed),
            modality="fundus", source="retina")


def _retina_captions(out, table, folder, seed):
    """retina_webdataset_part1.py's files: filename, captions (a Python list), sentence_level_captions."""
    for row in read_rows(table, "unimed", ("filename", "captions", "sentence_level_captions")):
        _fundus(out, folder, row["filename"], _listed(row["captions"]) + [row["sentence_level_captions"]], seed)


def _den(out, table, folder, seed):
    """06_DEN.csv (part 2): image, atributes, categories (a Python list). The caption is "The fundus image of"
    the last category that names no year and has no "//", else a category drawn with the seed."""
    for row in read_rows(table, "unimed", ("image", "categories")):
        categories = _listed(row["categories"])
        clean = [c for c in categories if "year" not in c.strip("/") and "//" not in c.strip("/")]
        if clean:
            caption = f"The fundus image of {clean[-1]}"
        else:
            caption = random.Random(derive_seed(seed, "retina", row["image"])).choice(categories) if categories else ""
        _fundus(out, folder, row["image"], [caption], seed)


def _mm_retinal(out, table, folder, seed):
    """39_MM_Retinal_dataset.csv (part 3): image, caption."""
    for row in read_rows(table, "unimed", ("image", "caption")):
        _fundus(out, folder, row["image"], [row["caption"]], seed)


RETINA_OWN_READERS = {"06_DEN.csv": _den, "39_MM_Retinal_dataset.csv": _mm_retinal}


def _retina(out, folder, seed):
    """Each Retina-Annotations CSV is a part, read as UniMed-CLIP's retina_webdataset_part{1,2,3}.py read it."""
    annotations = folder / "Retina-Annotations"
    tables = [t for t in sorted(annotations.glob("*.csv")) if t.name not in RETINA_LEFT_OUT]
    if not tables:
        raise DataError(f"unimed: retina: no annotation CSV in {annotations} (see UniMed-DATA.md)")
    for table in tables:
        out.part(RETINA_OWN_READERS.get(table.name, _retina_captions), table, folder, seed)


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


def _llava_row(out, folder, image: str, caption, seed: int) -> None:
    out.add(folder / "images" / image if image else None, caption if isinstance(caption, str) else "",
            seeded_split(f"llava_med/{image}", seed), source="llava_med")


def _llava_alignment(out, folder, seed):
    """A list of {image, conversations}: the caption is the answer, the second turn's value."""
    for record in _json(_annotation(folder, LLAVA_ALIGNMENT, "llava_med"), list):
        turns = record.get("conversations") if isinstance(record, dict) else None
        if not isinstance(turns, list) or len(turns) < 2 or not isinstance(turns[1], dict):
            out.malformed()
            continue
        _llava_row(out, folder, str(record.get("image") or ""), turns[1].get("value"), seed)


def _llava_instruct(out, folder, seed):
    """A dict of lists of {pair_id, fig_caption, in_text_mention}, images/<pair_id>.jpg: a row per figure
    caption, then one per first in-text mention's tokens (none without a mention)."""
    groups = _json(_annotation(folder, LLAVA_INSTRUCT, "llava_med"), dict).values()
    found = [e for group in groups if isinstance(group, list) for e in group]
    entries = [e for e in found if isinstance(e, dict) and e.get("pair_id")]
    out.malformed(len(found) - len(entries) + sum(not isinstance(group, list) for group in groups))
    for entry in entries:
        _llava_row(out, folder, f"{entry['pair_id']}.jpg", entry.get("fig_caption"), seed)
    for entry in entries:
        mentions = entry.get("in_text_mention")
        if isinstance(mentions, list) and mentions and isinstance(mentions[0], dict):
            _llava_row(out, folder, f"{entry['pair_id']}.jpg", mentions[0].get("tokens"), seed)


def _llava_med(out, folder, seed):
    """Each of the two annotation files is a part (UniMed-CLIP's llava_med_{alignment,instruct}_webdataset.py)."""
    out.part(_llava_alignment, folder, seed)
    out.part(_llava_instruct, folder, seed)


# (folder names under ROOT, case-insensitive) -> reader
SOURCES = [(("CheXpert-v1.0-small",), _chexpert), (("mimic-cxr-jpg",), _mimic), (("openI", "openi"), _openi),
           (("chest_xray8",), _chest_xray8), (("radimagenet",), _radimagenet), (("Retina-Datasets",), _retina),
           (("Quilt",), _quilt), (("pmc_oa",), _pmc_oa), (("ROCOV2",), _rocov2), (("llava_med",), _llava_med)]
LAYOUT = ("one or more of " + ", ".join(names[0] + "/" for names, _ in SOURCES) + " as in UniMed-CLIP's "
          "docs/UniMed-DATA.md (an annotation file missing or malformed: that part is left out, with a warning)")


def read(root: Path, seed: int = 0) -> UniMedCollection:
    found = [(child(root, *names), reader) for names, reader in SOURCES]
    found = [(folder, reader) for folder, reader in found if folder is not None and folder.is_dir()]
    if not found:
        raise layout_error("unimed", root, "a UniMed source folder", LAYOUT)
    out = UniMedCollection("unimed")
    for folder, reader in found:
        out.part(reader, folder, seed)
    if not out.rows and out.warnings:
        raise DataError("; ".join(out.warnings))
    return out
