"""MedSynth samples and files: ``render_sample`` (an image, its finding mask and a report that matches
them) and ``generate`` (images/, masks/ and manifest.jsonl, laid out as the package docstring says)."""
from __future__ import annotations

import json
import math
import numbers
import pathlib
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .anatomy import _clamp
from .findings import _RENDER, FINDINGS, MODALITIES, Difficulty, _measure
from .reports import _report, finding_sentence

P_NORMAL = 1 / 3
SPLITS = (("train", 0.8), ("val", 0.9), ("test", 1.0))  # cumulative probabilities
_PNG_LEVEL = 1  # zlib level of the written PNGs


@dataclass
class Sample:
    image: np.ndarray  # uint8 [H, W]
    mask: np.ndarray | None  # bool [H, W]; None for normal
    report: str
    location: str | None
    size_word: str | None


def render_sample(rng: np.random.Generator, modality: str, finding: str, size: int = 96,
                  difficulty: Difficulty = Difficulty(), background: np.random.Generator | None = None) -> Sample:
    """Render one image with its finding mask and a report that matches it. With ``background`` (the
    generator of the anatomy variant, texture and noise; the finding comes from ``rng``) the report is the
    finding sentence alone: a sample of the grounding sanity set."""
    if finding not in FINDINGS[modality]:
        raise ValueError(f"unknown finding {finding!r} for {modality}; choose from {FINDINGS[modality]}")
    img, mask, location = _RENDER[modality](rng if background is None else background, finding, size, difficulty, rng)
    image = (_clamp(img) * 255 + 0.5).astype(np.uint8)
    size_word, mm = (None, None) if mask is None else _measure(modality, finding, mask)
    report = (_report(rng, modality, finding, location, size_word, mm) if background is None
              else finding_sentence(rng, finding, location, size_word, mm))
    return Sample(image, mask, report, location, size_word)


def _write_png(path, image):
    """Minimal 8-bit greyscale PNG writer: "Up"-filtered rows, zlib RLE strategy. Files 1 % larger than
    Pillow's compress_level=1 output; MedSynth generation runs 1.4-2x faster with it than with Pillow
    (benchmarks/RESULTS.md)."""
    h, w = image.shape
    rows = np.empty((h, w + 1), np.uint8)
    rows[:, 0] = 2  # filter type "Up": each row stored as its difference (mod 256) to the row above
    rows[:, 1:] = image
    rows[1:, 1:] -= image[:-1]
    deflate = zlib.compressobj(_PNG_LEVEL, zlib.DEFLATED, 15, 8, zlib.Z_RLE)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8 bit, greyscale, no interlace
    idat = deflate.compress(rows.tobytes()) + deflate.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def mix_cdf(mix: Mapping[str, float]) -> np.ndarray:
    """Cumulative probabilities over MODALITIES of a {modality: weight} mix (weights are normalised;
    modalities left out get none). Raises ValueError on an unknown name or a weight that is not > 0."""
    if not mix:
        raise ValueError("the modality mix is empty")
    for name, weight in mix.items():
        if name not in MODALITIES:
            raise ValueError(f"unknown modality {name!r} in the mix; choose from {', '.join(MODALITIES)}")
        if not (isinstance(weight, numbers.Real) and math.isfinite(weight) and weight > 0):
            raise ValueError(f"the weight of {name} in the mix must be a finite number > 0, got {weight!r}")
    cdf = np.cumsum([float(mix.get(m, 0.0)) for m in MODALITIES])
    return cdf / cdf[-1]  # last entry exactly 1.0, so every uniform draw in [0, 1) finds a modality


def _draw(rng, cdf=None, p_normal=P_NORMAL):
    """Split, modality (uniform, or from the mix's cdf) and finding of one sample."""
    u = rng.random()
    split = next(name for name, p in SPLITS if u < p)
    if cdf is None:
        modality = MODALITIES[rng.integers(len(MODALITIES))]
    else:  # modalities without weight have cdf[k] == cdf[k - 1] and are never picked
        modality = MODALITIES[int(np.searchsorted(cdf, rng.random(), side="right"))]
    findings = FINDINGS[modality]
    finding = findings[0] if rng.random() < p_normal else findings[1 + rng.integers(len(findings) - 1)]
    return split, modality, finding


def generate(out_dir, n: int, seed: int = 0, size: int = 96, difficulty: Difficulty = Difficulty(),
             progress: bool = True, mix: Mapping[str, float] | None = None, sanity: bool = False) -> pathlib.Path:
    """Write n samples (images/, masks/ for abnormal ones, manifest.jsonl); returns the manifest path.
    mix: {modality: weight} to draw modalities from instead of uniformly, e.g. {"xray": 0.6, "ct": 0.4}.
    sanity: the grounding sanity set: every image has a finding, drawn on one fixed background per
    modality (anatomy, texture and noise), and its report is the finding sentence alone, so the finding
    is the only thing that varies and the report names it."""
    cdf = None if mix is None else mix_cdf(mix)
    out = pathlib.Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    folder = str(out)
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="MedSynth", unit="img")
    manifest = out / "manifest.jsonl"
    with open(manifest, "w") as f:
        for i in indices:
            rng = np.random.default_rng([seed, i])
            split, modality, finding = _draw(rng, cdf, 0.0 if sanity else P_NORMAL)
            # one background per modality: a three-word seed, never a sample's (seed, i)
            background = np.random.default_rng([seed, 0, MODALITIES.index(modality)]) if sanity else None
            sample = render_sample(rng, modality, finding, size, difficulty, background)
            name = f"{i:06d}.png"
            _write_png(f"{folder}/images/{name}", sample.image)
            if sample.mask is not None:
                _write_png(f"{folder}/masks/{name}", sample.mask.view(np.uint8) * np.uint8(255))
            row = {"image": f"images/{name}", "report": sample.report, "modality": modality, "split": split,
                   "finding": finding, "labels": [finding],
                   "mask": None if sample.mask is None else f"masks/{name}",
                   "location": sample.location, "size": sample.size_word}
            f.write(json.dumps(row) + "\n")
    return manifest
