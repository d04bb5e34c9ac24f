"""ROCO (Pelka et al., LABELS 2018) as github.com/razorx89/roco-dataset ships it, after its
``scripts/fetch.py`` downloaded the images.

Layout (ROOT is the clone, or its ``data`` folder)::

    data/{train,validation,test}/radiology/captions.txt   ROCO_00020<TAB> caption
    data/{train,validation,test}/radiology/dlinks*.txt    ROCO_00020<TAB>wget ... PMC1234.tar.gz ...<TAB>fig.jpg
    data/{train,validation,test}/radiology/images/PMC1234_fig.jpg   (fetch.py's names)

Only the radiology subset is read (non-radiology holds photographs, charts and micrographs).
Captions never state the modality as a field: it is left empty for ``medmoe label-modality``.
The split is ROCO's own (train, validation -> val, test).
"""
from __future__ import annotations

from pathlib import Path

from .common import SPLIT_NAMES, Collection, layout_error

LAYOUT = "data/{train,validation,test}/radiology/captions.txt, dlinks.txt and images/ (razorx89/roco-dataset)"


def _tab_file(path: Path) -> dict[str, list[str]]:
    """ROCO id -> the other tab-separated fields of each line."""
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0].strip():
            table[fields[0].strip()] = [f.strip() for f in fields[1:]]
    return table


def _image_names(folder: Path) -> dict[str, str]:
    """ROCO id -> file name fetch.py gives its image (PMC id of the archive + '_' + the figure's name)."""
    names = {}
    for dlinks in sorted(folder.glob("dlinks*.txt")):
        for roco_id, fields in _tab_file(dlinks).items():
            archive = next((w for w in fields[0].split() if w.endswith(".tar.gz")), "")
            if archive and len(fields) >= 2:
                names[roco_id] = f"{archive.rsplit('/', 1)[-1][: -len('.tar.gz')]}_{fields[-1]}"
    return names


def read(root: Path, seed: int = 0) -> Collection:
    data = root / "data" if (root / "data").is_dir() else root
    folders = [(split, data / split / "radiology") for split in ("train", "validation", "test")]
    folders = [(split, f) for split, f in folders if (f / "captions.txt").is_file()]
    if not folders:
        raise layout_error("roco", root, "data/*/radiology/captions.txt", LAYOUT)
    out = Collection("roco")
    for split, folder in folders:
        names = _image_names(folder)
        images = folder / "images"
        for roco_id, fields in _tab_file(folder / "captions.txt").items():
            # fetch.py's name, else a mirror that names images by ROCO id
            candidates = [images / names[roco_id]] if roco_id in names else []
            candidates.append(images / f"{roco_id}.jpg")
            image = next((p for p in candidates if p.is_file()), None)
            out.add(image, " ".join(fields), SPLIT_NAMES[split], roco_id=roco_id)
    return out
