"""PMC-OA (Lin et al., PMC-CLIP, MICCAI 2023) as huggingface.co/datasets/axiong/pmc_oa ships it.

Layout under ROOT::

    train.jsonl, valid.jsonl, test.jsonl     {"image": "PMC212319_Fig3_4.jpg", "caption": "...", ...}
      or pmc_oa.jsonl (the whole set, no split)
    caption_T060_filtered_top4_sep_v0_subfigures/PMC212319_Fig3_4.jpg   (images.zip unpacked;
      also found under images/ or images/caption_T060_filtered_top4_sep_v0_subfigures/)

Captions state no modality (left empty for ``medmoe label-modality``). The split is the source's
where its split files are present, else a seeded split by article (the PMC id).
"""
from __future__ import annotations

from pathlib import Path

from ..tables import read_rows
from .common import SPLIT_NAMES, Collection, layout_error, seeded_split

SUBFIGURES = "caption_T060_filtered_top4_sep_v0_subfigures"
LAYOUT = f"train/valid/test.jsonl or pmc_oa.jsonl and {SUBFIGURES}/ (axiong/pmc_oa)"


def image_folder(root: Path) -> Path | None:
    for folder in (root / SUBFIGURES, root / "images" / SUBFIGURES, root / "images"):
        if folder.is_dir():
            return folder
    return None


def add_records(out: Collection, records: list[dict], images: Path, split_of, **extra) -> None:
    """Add PMC-OA records ({"image", "caption"}) with images under ``images``; ``split_of(record)`` -> split."""
    for record in records:
        name = str(record.get("image") or "").strip()
        out.add(images / name if name else None, record.get("caption"), split_of(record), **extra)


def read(root: Path, seed: int = 0) -> Collection:
    images = image_folder(root)
    if images is None:
        raise layout_error("pmc-oa", root, f"the image folder {SUBFIGURES}/", LAYOUT)
    out = Collection("pmc-oa")
    split_files = [(s, root / f"{s}.jsonl") for s in ("train", "valid", "test") if (root / f"{s}.jsonl").is_file()]
    if split_files:
        for split, path in split_files:
            add_records(out, read_rows(path, "pmc-oa"), images, lambda r, s=SPLIT_NAMES[split]: s)
    elif (root / "pmc_oa.jsonl").is_file():
        add_records(out, read_rows(root / "pmc_oa.jsonl", "pmc-oa"), images,
                    lambda r: seeded_split(str(r.get("image", "")).split("_")[0], seed))
    else:
        raise layout_error("pmc-oa", root, "train.jsonl/valid.jsonl/test.jsonl or pmc_oa.jsonl", LAYOUT)
    return out
