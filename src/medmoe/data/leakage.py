"""Leakage between pretraining and benchmark data: the pretraining rows that hold a benchmark row's
image or patient (``medmoe data leakage``).

``find_leaks(pretrain_manifests, benchmark_manifests) -> LeakReport``. A pretraining row and a
benchmark row are a pair when

- ``exact``: their images decode to the same pixels (``load_image``, greyscale, at 16-bit precision,
  through a BLAKE2b digest), whatever the file's name, format or bit depth;
- ``near``: one image is the other resized, re-encoded (JPEG quality >= 75), converted between 8 and
  16 bits or exported from DICOM as ``load_image`` windows it. Both are summed up by their lowest
  spatial frequencies: the 2-D DCT-II of the loaded image, 16 x 16 coefficients each an average over
  all pixels, so an image and a resized copy of it give the same values. A 64-bit pHash (the 8 x 8
  lowest coefficients above their median, as imagehash's ``phash``) within ``MAX_HAMMING`` bits
  proposes candidates, found by multi-index hashing (``HammingIndex``), not by comparing all pairs; a
  candidate is a near duplicate when the 255 coefficients without the mean, scaled to unit length,
  lie within ``MAX_DISTANCE`` (Euclidean) of each other. The pHash alone cannot tell different
  patients' images of one view apart (MedSynth's images of one anatomy variant are 0-2 bits apart);
  the coefficients see the texture that differs between them;
- ``patient`` / ``study``: both rows carry the same ``patient`` (or ``subject_id``) / ``study_id``
  value, the columns the benchmark adapters (``patient``) and the MIMIC-CXR corpus (``subject_id``,
  ``study_id``) write, and the same ``dataset`` value (an id names a patient within its source only;
  rows without a ``dataset`` column are one source).

Thresholds (benchmarks/RESULTS.md, "Leakage check": 100,000 MedSynth pretraining rows against 10,000
benchmark rows): the 1,000 planted copies (renamed, 16-bit, JPEG at quality 75 and 90, resized 0.67-2.5x
as PNG or as JPEG at quality 75-95) lay at most 4 pHash bits and 0.016 from their source and were all
found; the closest two different images lay 0.021 apart (no false match; 209 pairs within 0.025).
Adjacent 2.2 mm slices of a real EPI volume lie 0.043 or more apart. A copy shrunk below about 0.6x and
then JPEG-compressed can drift past 0.02 and be missed.

A row's ``slice_index`` column picks a volume's slice. Hashes are cached beside each manifest
(``MANIFEST.leakage.npz``, keyed by the image path as written, slice, file size and mtime), so a second
run hashes only new or changed images. Unreadable and constant images are skipped and counted.
"""
from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ImageLoadError, ManifestError
from ..files import atomic_write
from .io import load_image
from .tables import read_table

MAX_HAMMING = 10  # pHash bits (of 64) within which two images are compared further
MAX_DISTANCE = 0.02  # Euclidean distance of the unit DCT descriptors of a near duplicate
DCT_SIZE, PHASH_SIZE = 16, 8
PATIENT_COLUMNS, STUDY_COLUMNS = ("patient", "subject_id"), ("study_id",)
CACHE_SUFFIX, CACHE_VERSION = ".leakage.npz", 1
BATCH = 512  # benchmark images searched at once
# the descriptor's coefficients, lowest frequencies first (the first LOW are the pHash block's), mean left out
_ORDER = sorted(((k, m) for k in range(DCT_SIZE) for m in range(DCT_SIZE)), key=lambda km: (max(km), km))[1:]
_FLAT = np.array([k * DCT_SIZE + m for k, m in _ORDER])
LOW = PHASH_SIZE**2 - 1
_POP16 = np.unpackbits(np.arange(1 << 16, dtype=">u2").view(np.uint8)).reshape(-1, 16).sum(1).astype(np.uint8)


@dataclass(frozen=True)
class Fingerprint:
    """What an image is compared by: ``exact`` (16-byte digest of its pixels), ``phash`` (64 bits) and
    ``descriptor`` (float16 [255], unit length)."""
    exact: bytes
    phash: int
    descriptor: np.ndarray


@lru_cache(maxsize=64)
def _basis(n: int) -> np.ndarray:
    """DCT-II rows 0..DCT_SIZE-1 over n samples, divided by n (each coefficient is an average)."""
    k, y = np.arange(DCT_SIZE)[:, None], np.arange(n)[None, :]
    return (np.cos(np.pi * k * (y + 0.5) / n) / n).astype(np.float32)


def fingerprint(image: np.ndarray) -> Fingerprint:
    """The fingerprint of a greyscale image in [0, 1] (``load_image``); ImageLoadError if it is constant."""
    pixels = np.round(image * 65535).astype("<u2")
    exact = hashlib.blake2b(np.array(image.shape, "<u4").tobytes() + pixels.tobytes(), digest_size=16).digest()
    coefficients = _basis(image.shape[0]) @ image.astype(np.float32) @ _basis(image.shape[1]).T
    block = coefficients[:PHASH_SIZE, :PHASH_SIZE].ravel()
    phash = int(np.packbits(block > np.median(block)).view(">u8")[0])
    ac = coefficients.ravel()[_FLAT].astype(np.float64)
    norm = np.linalg.norm(ac)
    if norm < 1e-5:
        raise ImageLoadError("constant image, nothing to compare")
    return Fingerprint(exact, phash, (ac / norm).astype(np.float16))


def hash_image(path: str | Path, slice_index: int | None = None) -> Fingerprint:
    """``fingerprint`` of the image file (slice ``slice_index`` of a volume) as ``load_image`` reads it."""
    return fingerprint(load_image(path, slice_index))


def _chunks(codes: np.ndarray) -> np.ndarray:
    """The four 16-bit chunks of each uint64 code, [N, 4]."""
    return np.ascontiguousarray(codes, dtype=np.uint64).view(np.uint16).reshape(-1, 4)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between uint64 codes ``a`` and ``b`` (elementwise, broadcast)."""
    x = np.bitwise_xor(a, b)
    bits = _POP16[_chunks(x)]
    return (bits[:, 0] + bits[:, 1] + bits[:, 2] + bits[:, 3]).astype(np.int64).reshape(x.shape)


class HammingIndex:
    """Multi-index hashing (Norouzi, Punjani and Fleet, CVPR 2012) of 64-bit codes: one sorted table per
    16-bit chunk. Codes within r bits of a query agree within r // 4 bits on at least one chunk, so a
    search looks up, in each table, the chunk values within r // 4 bits of the query's (137 for r < 12)
    and measures only the codes found there."""

    def __init__(self, codes: np.ndarray):
        self.codes = np.asarray(codes, dtype=np.uint64)
        self.chunks = _chunks(self.codes).T.astype(np.int64)
        self.orders = [np.argsort(chunk, kind="stable") for chunk in self.chunks]
        self.sorted = [chunk[order] for chunk, order in zip(self.chunks, self.orders)]

    def search(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(query index, code index, bits apart) of every pair within ``radius`` bits, each once, and how
        many codes the tables proposed (the pHash comparisons made)."""
        queries = np.asarray(queries, dtype=np.uint64)
        within = min(radius // 4, 16)
        flips = np.flatnonzero(_POP16 <= within)
        chunks = _chunks(queries).T.astype(np.int64)
        found, proposed = [], 0
        for j in range(4):
            keys = (chunks[j][:, None] ^ flips[None, :]).ravel()
            low, high = np.searchsorted(self.sorted[j], keys, "left"), np.searchsorted(self.sorted[j], keys, "right")
            counts = high - low
            q = np.repeat(np.arange(len(keys)) // len(flips), counts)
            i = self.orders[j][np.repeat(low - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())]
            proposed += len(q)
            bits = hamming(queries[q], self.codes[i])
            keep = np.flatnonzero(bits <= radius)
            for k in range(j):  # a pair an earlier table proposed is reported there
                keep = keep[_POP16[chunks[k][q[keep]] ^ self.chunks[k][i[keep]]] > within]
            found.append((q[keep], i[keep], bits[keep]))
        return (*(np.concatenate(column) for column in zip(*found)), proposed)


@dataclass(frozen=True)
class _Row:
    manifest: Path
    row: int
    image: str  # as the manifest writes it (relative to the manifest)
    path: Path
    slice_index: int | None
    dataset: str | None
    patient: str | None
    study: str | None


@dataclass
class LeakPair:
    """A benchmark row and a pretraining row that share an image or a patient/study: ``kinds`` among
    exact, near, patient, study; ``hamming`` and ``distance`` for image matches."""
    dataset: str
    benchmark: str
    benchmark_row: int
    benchmark_image: str
    pretrain: str
    pretrain_row: int
    pretrain_image: str
    kinds: list[str] = field(default_factory=list)
    hamming: int | None = None
    distance: float | None = None


@dataclass
class LeakReport:
    """``per_dataset`` (benchmark dataset -> rows, skipped, leaked rows and rows per kind), ``pairs``,
    ``skipped`` (rows and images that could not be compared, with reasons), ``checked`` (what was
    compared), ``warnings``, ``leaked`` and a one-line ``verdict``."""
    per_dataset: dict[str, dict[str, int]]
    pairs: list[LeakPair]
    skipped: list[dict]
    checked: dict[str, int]
    thresholds: dict[str, float]
    warnings: list[str]

    @property
    def leaked(self) -> bool:
        return bool(self.pairs)

    @property
    def verdict(self) -> str:
        rows = sum(d["rows"] for d in self.per_dataset.values())
        skipped = f" ({len(self.skipped)} rows or images skipped)" if self.skipped else ""
        if not self.leaked:
            return (f"clean: none of {rows} benchmark rows shares an image, patient or study with the "
                    f"{self.checked['pretrain_rows']} pretraining rows{skipped}")
        leaked = ", ".join(f"{name} {d['leaked']}" for name, d in self.per_dataset.items() if d["leaked"])
        return (f"LEAK: {sum(d['leaked'] for d in self.per_dataset.values())} of {rows} benchmark rows share an "
                f"image, patient or study with the pretraining data ({leaked}){skipped}")

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "leaked": self.leaked, "per_dataset": self.per_dataset,
                "checked": self.checked, "thresholds": self.thresholds, "pairs": [asdict(p) for p in self.pairs],
                "skipped": self.skipped, "warnings": self.warnings}


def _id(record: dict, columns: tuple[str, ...]) -> str | None:
    return next((str(record[c]).strip() for c in columns if str(record.get(c) or "").strip()), None)


def _read_rows(manifest: Path, skipped: list[dict]) -> list[_Row]:
    """The rows of a manifest; a row without an image or with a bad ``slice_index`` is skipped."""
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    rows, base = [], manifest.parent.resolve()
    for record in read_table(manifest, ("image",))[1]:
        data = record.data or {}
        image = str(data.get("image") or "").strip()
        reason = record.error or ("missing 'image'" if not image else None)
        slice_index = data.get("slice_index")
        if not reason and slice_index not in (None, ""):
            try:
                slice_index = int(slice_index)
            except (TypeError, ValueError):
                reason = f"slice_index must be an integer, got {slice_index!r}"
        if reason:
            skipped.append({"manifest": str(manifest), "row": record.row, "image": image or None, "reason": reason})
            continue
        rows.append(_Row(manifest, record.row, image, Path(os.path.normpath(os.path.join(base, image))),
                         None if slice_index in (None, "") else slice_index, str(data.get("dataset") or "").strip() or None,
                         _id(data, PATIENT_COLUMNS), _id(data, STUDY_COLUMNS)))
    return rows


def _cache_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + CACHE_SUFFIX)


def _load_cache(manifest: Path, warnings: list[str]) -> dict:
    """(image, slice) -> (size, mtime_ns, Fingerprint or the reason it could not be read)."""
    path = _cache_path(manifest)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION:
                return {}
            return {(image, None if s < 0 else int(s)): (int(size), int(mtime), error or Fingerprint(
                        exact.tobytes(), int(code), descriptor))
                    for image, s, size, mtime, error, exact, code, descriptor in zip(
                        z["image"].tolist(), z["slice"], z["size"], z["mtime_ns"], z["error"].tolist(), z["exact"],
                        z["phash"], z["descriptor"])}
    except (OSError, ValueError, KeyError) as exc:
        warnings.append(f"ignored the unreadable hash cache {path} ({exc})")
        return {}


def _save_cache(manifest: Path, entries: dict, warnings: list[str]) -> None:
    items = list(entries.items())
    fingerprints = [v[2] if isinstance(v[2], Fingerprint) else None for _, v in items]
    arrays = {
        "version": np.array(CACHE_VERSION),
        "image": np.array([k[0] for k, _ in items], dtype=str),
        "slice": np.array([-1 if k[1] is None else k[1] for k, _ in items], dtype=np.int64),
        "size": np.array([v[0] for _, v in items], dtype=np.int64),
        "mtime_ns": np.array([v[1] for _, v in items], dtype=np.int64),
        "error": np.array(["" if f else v[2] for f, (_, v) in zip(fingerprints, items)], dtype=str),
        "exact": np.array([np.frombuffer(f.exact if f else bytes(16), np.uint8) for f in fingerprints],
                          dtype=np.uint8).reshape(-1, 16),
        "phash": np.array([f.phash if f else 0 for f in fingerprints], dtype=np.uint64),
        "descriptor": np.array([f.descriptor if f else np.zeros(len(_FLAT), np.float16) for f in fingerprints],
                               dtype=np.float16).reshape(-1, len(_FLAT))}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        atomic_write(_cache_path(manifest), write)
    except OSError as exc:
        warnings.append(f"could not write the hash cache {_cache_path(manifest)} ({exc})")


@dataclass
class _Side:
    """The rows of one side and the fingerprint each holds (``image_of``: index into the arrays, -1 none)."""
    rows: list[_Row]
    image_of: np.ndarray
    exact: np.ndarray  # uint8 [N, 16]
    phash: np.ndarray  # uint64 [N]
    descriptor: np.ndarray  # float32 [N, 255]

    @cached_property
    def low(self) -> np.ndarray:
        """The descriptors' LOW lowest frequencies, contiguous (what ``_distances`` reads first)."""
        return np.ascontiguousarray(self.descriptor[:, :LOW])


def _hash_manifest(manifest: Path, rows: list[_Row], warnings: list[str], counts: dict, progress: bool) -> dict:
    """(image, slice) -> (size, mtime_ns, Fingerprint or why it could not be read) of every row whose file
    exists: from the manifest's cache where the file is unchanged, else hashed; the cache is rewritten
    when anything changed."""
    from tqdm import tqdm

    cache, fresh, todo = _load_cache(manifest, warnings), {}, {}
    for row in rows:
        try:
            st = row.path.stat()
        except OSError:
            continue
        key = (row.image, row.slice_index)
        if key in cache and cache[key][:2] == (st.st_size, st.st_mtime_ns):
            fresh[key] = cache[key]
        else:
            todo[key] = (row, st.st_size, st.st_mtime_ns)
    for key, (row, size, mtime) in tqdm(todo.items(), desc=f"hashing {manifest.name}", unit="img",
                                        disable=not progress or not todo):
        try:
            fresh[key] = (size, mtime, hash_image(row.path, row.slice_index))
        except ImageLoadError as exc:
            fresh[key] = (size, mtime, str(exc).removeprefix(f"{row.path}: "))
    counts["hashed"] += len(todo)
    counts["cached"] += len(fresh) - len(todo)
    if todo or set(fresh) != set(cache):
        _save_cache(manifest, fresh, warnings)
    return fresh


def _hash_side(manifests, skipped: list[dict], warnings: list[str], counts: dict, progress: bool) -> _Side:
    """Read and hash every row of ``manifests``, skipping (into ``skipped``) what cannot be read."""
    rows, fingerprints, index, image_of = [], [], {}, []
    for manifest in map(Path, manifests):
        own = _read_rows(manifest, skipped)
        hashed = _hash_manifest(manifest, own, warnings, counts, progress)
        for row in own:
            result = hashed.get((row.image, row.slice_index), (0, 0, "image file not found"))[2]
            if not isinstance(result, Fingerprint):
                skipped.append({"manifest": str(manifest), "row": row.row, "image": row.image, "reason": result})
                image_of.append(-1)
                continue
            if (row.path, row.slice_index) not in index:
                index[row.path, row.slice_index] = len(fingerprints)
                fingerprints.append(result)
            image_of.append(index[row.path, row.slice_index])
        rows += own
    return _Side(rows, np.array(image_of, dtype=np.int64),
                 np.array([np.frombuffer(f.exact, np.uint8) for f in fingerprints], dtype=np.uint8).reshape(-1, 16),
                 np.array([f.phash for f in fingerprints], dtype=np.uint64),
                 np.array([f.descriptor for f in fingerprints], dtype=np.float32).reshape(-1, len(_FLAT)))


def _distances(a: _Side, qa: np.ndarray, b: _Side, qb: np.ndarray, limit: float) -> np.ndarray:
    """Euclidean distance between the descriptors of images a[qa] and b[qb], in blocks that fit the CPU's
    cache; pairs already farther than ``limit`` over the LOW lowest frequencies (a lower bound of the
    whole) are not finished and stay inf."""
    result = np.full(len(qa), np.inf, dtype=np.float32)
    for start in range(0, len(qa), 1 << 16):
        x = a.low[qa[start:start + (1 << 16)]]
        x -= b.low[qb[start:start + (1 << 16)]]
        near = start + np.flatnonzero(np.einsum("ij,ij->i", x, x) <= limit**2)
        x = a.descriptor[qa[near]] - b.descriptor[qb[near]]
        result[near] = np.sqrt(np.einsum("ij,ij->i", x, x))
    return result


def _image_pairs(pre: _Side, bench: _Side, max_hamming: int, max_distance: float, counts: dict, progress: bool):
    """(benchmark image, pretraining image, bits apart, distance) of every near or exact duplicate."""
    from tqdm import tqdm

    index = HammingIndex(pre.phash)
    found = []
    starts = range(0, len(bench.phash), BATCH)
    for start in tqdm(starts, desc="searching", unit="batch", disable=not progress or len(starts) < 2):
        q, i, bits, proposed = index.search(bench.phash[start:start + BATCH], max_hamming)
        q += start
        distance = _distances(bench, q, pre, i, max_distance)
        keep = distance <= max_distance
        counts["pairs_proposed"] += proposed
        counts["pairs_compared"] += len(q)
        found += zip(q[keep].tolist(), i[keep].tolist(), bits[keep].tolist(), distance[keep].tolist())
    return found


def _namespace_ids(rows: list[_Row]) -> dict:
    """(dataset, kind, id) -> indices of the rows that carry it."""
    ids = defaultdict(list)
    for n, row in enumerate(rows):
        for kind, value in (("patient", row.patient), ("study", row.study)):
            if value:
                ids[row.dataset, kind, value].append(n)
    return ids


def _per_dataset(rows: list[_Row], image_of: np.ndarray, pairs: dict) -> dict[str, dict[str, int]]:
    """Benchmark dataset -> its rows, rows skipped, rows leaked (by any kind and by each) and pairs."""
    per_dataset = defaultdict(lambda: dict.fromkeys(("rows", "skipped", "leaked", "exact", "near", "patient", "study",
                                                     "pairs"), 0))
    for row, image in zip(rows, image_of.tolist()):
        per_dataset[row.dataset or row.manifest.name]["rows"] += 1
        per_dataset[row.dataset or row.manifest.name]["skipped"] += image < 0
    leaked = defaultdict(set)  # (dataset, kind) -> benchmark rows
    for (b, _), found in pairs.items():
        per_dataset[found.dataset]["pairs"] += 1
        for kind in ("leaked", *found.kinds):
            leaked[found.dataset, kind].add(b)
    for (dataset, kind), own in leaked.items():
        per_dataset[dataset][kind] = len(own)
    return dict(sorted(per_dataset.items()))


def find_leaks(pretrain_manifests, benchmark_manifests, max_hamming: int = MAX_HAMMING,
               max_distance: float = MAX_DISTANCE, progress: bool = True) -> LeakReport:
    """Every pair of a pretraining row and a benchmark row that share an image (exact or near duplicate)
    or a patient/study id (module docstring), counted per benchmark dataset (the ``dataset`` column,
    else the manifest's file name). A missing manifest or one without any readable image is a
    ManifestError; unreadable rows and images are skipped and listed in ``LeakReport.skipped``."""
    if not 0 <= max_hamming <= 64 or not 0 <= max_distance <= 2:
        raise ConfigError(f"the pHash threshold must be 0-64 bits and the distance 0-2, got {max_hamming} and "
                          f"{max_distance}")
    skipped, warnings = [], []
    counts = dict.fromkeys(("hashed", "cached", "pairs_proposed", "pairs_compared"), 0)
    sides = [_hash_side(m, skipped, warnings, counts, progress) for m in (pretrain_manifests, benchmark_manifests)]
    for side, what, manifests in zip(sides, ("pretraining", "benchmark"), (pretrain_manifests, benchmark_manifests)):
        if not len(side.phash):
            raise ManifestError(f"no readable image in the {what} manifests {', '.join(map(str, manifests))}")
    pre, bench = sides
    pairs: dict[tuple[int, int], LeakPair] = {}

    def pair(b: int, p: int, kind: str) -> LeakPair:
        rb, rp = bench.rows[b], pre.rows[p]
        if (b, p) not in pairs:
            pairs[b, p] = LeakPair(rb.dataset or rb.manifest.name, str(rb.manifest), rb.row, rb.image,
                                   str(rp.manifest), rp.row, rp.image)
        pairs[b, p].kinds.append(kind)
        return pairs[b, p]

    rows_of = [defaultdict(list), defaultdict(list)]
    for side, own in zip(sides, rows_of):
        for n, image in enumerate(side.image_of.tolist()):
            own[image].append(n)
    for q, i, bits, distance in _image_pairs(pre, bench, max_hamming, max_distance, counts, progress):
        kind = "exact" if np.array_equal(bench.exact[q], pre.exact[i]) else "near"
        for b in rows_of[1][q]:
            for p in rows_of[0][i]:
                found = pair(b, p, kind)
                found.hamming, found.distance = bits, round(distance, 5)
    ids = _namespace_ids(pre.rows)
    for b, row in enumerate(bench.rows):
        for kind, value in (("patient", row.patient), ("study", row.study)):
            for p in ids.get((row.dataset, kind, value), []) if value else []:
                pair(b, p, kind)
    per_dataset = _per_dataset(bench.rows, bench.image_of, pairs)
    counts.update(pretrain_rows=len(pre.rows), benchmark_rows=len(bench.rows), pretrain_images=len(pre.phash),
                  benchmark_images=len(bench.phash), all_pairs=len(pre.phash) * len(bench.phash))
    return LeakReport(per_dataset, sorted(pairs.values(), key=lambda p: (
                          p.dataset, p.benchmark, p.benchmark_row, p.pretrain, p.pretrain_row)),
                      skipped, counts, {"max_hamming": max_hamming, "max_distance": max_distance}, warnings)
