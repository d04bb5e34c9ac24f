"""Webdataset tar shards: written from a manifest, streamed back as training batches.

A shard sample is ``KEY.EXT`` (the source image file's bytes, never re-encoded; EXT keeps its
format: png, jpg, dcm, nii.gz, ...), ``KEY.txt`` (the report) and ``KEY.json`` (modality, labels,
split, manifest row, source path). KEY is the zero-padded manifest row number.

Streaming: readers are the (rank, worker) pairs, G = world * max(workers, 1) of them. In pass
p = 0, 1, 2, ... over the data the shards are permuted by (seed, p) and reader g takes every G-th
one from position g; its samples go through a shuffle buffer seeded by (seed, p, g) and are
batched inside the reader. Each reader's stream is endless, so every rank yields as many steps as
the trainer asks for. The DataLoader takes batches from its workers in turn: per-rank step s is
batch s // W of worker s % W (W = max(workers, 1)). The order is a pure function of (seed, rank,
world, workers): resuming at step s0 skips, without decoding, the samples each worker used before.

Modality-balanced streaming (``balance=True``, ``--balance modality``): before the shuffle buffer,
a sample of modality m is kept with probability min_m' n_m' / n_m (counts from shards.json), drawn
from a generator seeded by (seed, p, g), so every modality streams equally often; passes then have
random lengths, and a resume reads (without decoding) the passes it skips.
"""
from __future__ import annotations

import itertools
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..config import modality_index
from ..errors import ImageLoadError, ManifestError
from ..files import atomic_write_text
from ..seeding import derive_seed
from .dataset import collate, collate_item
from .io import is_dicom
from .manifest import Manifest, read_manifest
from .transforms import ImageTransform

SHUFFLE_BUFFER = 1000  # samples held by each reader's shuffle buffer


def _image_ext(path: Path) -> str:
    """The source's own extension ('png', 'dcm', 'nii.gz'); 'dcm' or 'img' when it has no usable one."""
    if path.name.lower().endswith(".nii.gz"):
        return "nii.gz"
    ext = path.suffix.lower().lstrip(".")
    if ext.isalnum() and not ext.isdigit() and ext not in ("txt", "json"):
        return ext
    return "dcm" if is_dicom(path) else "img"


def write_shards(manifest: Manifest | str | Path, out: str | Path, shard_size: int, split: str | None = None,
                 progress: bool = True) -> dict:
    """Write the usable rows (of ``split``, if given; ``Manifest.split`` semantics) to OUT/000000.tar,
    ... (at most ``shard_size`` samples each) and OUT/shards.json; returns the summary written there."""
    from tqdm import tqdm
    from webdataset import TarWriter

    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    rows = manifest.rows if split is None else manifest.split(split)
    if not rows:
        raise ManifestError(f"{manifest.path}: no usable row" + (f" in split {split!r}" if split else ""))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.tar")):
        raise FileExistsError(f"{out} already holds .tar files; write shards to a new or empty folder")
    shards, skipped, modalities = [], list(manifest.unusable), Counter()
    bar = tqdm(total=len(rows), desc="shards", unit="img", disable=not progress)
    for start in range(0, len(rows), shard_size):
        name, written = f"{len(shards):06d}.tar", 0
        with open(out / (name + ".tmp"), "wb") as f, TarWriter(f, encoder=False) as tar:
            for row in rows[start : start + shard_size]:
                bar.update()
                try:
                    image = row.image.read_bytes()
                except OSError as exc:
                    skipped.append({"row": row.row, "reason": f"cannot read {row.image}: {exc.strerror or exc}"})
                    continue
                meta = {"modality": row.modality, "labels": row.labels, "split": row.split, "row": row.row,
                        "source": os.path.relpath(row.image, manifest.path.parent.resolve())}
                tar.write({"__key__": f"{row.row:09d}", _image_ext(row.image): image,
                           "txt": row.report.encode("utf-8"), "json": json.dumps(meta).encode("utf-8")})
                modalities[row.modality or "unknown"] += 1
                written += 1
        if written:
            os.replace(out / (name + ".tmp"), out / name)
            shards.append({"name": name, "samples": written})
        else:
            os.remove(out / (name + ".tmp"))
    bar.close()
    if not shards:
        raise ManifestError(f"{manifest.path}: no image could be read")
    summary = {"shards": shards, "samples": sum(s["samples"] for s in shards),
               "per_modality": dict(sorted(modalities.items())), "skipped": skipped}
    atomic_write_text(out / "shards.json", json.dumps(summary, indent=2) + "\n")
    return summary


def shard_paths(pattern: str | Path) -> list[Path]:
    """A brace pattern ('OUT/{000000..000099}.tar'), one tar, or a folder (all its *.tar)."""
    from braceexpand import braceexpand

    if Path(pattern).is_dir():
        paths = sorted(Path(pattern).glob("*.tar"))
    else:
        paths = [Path(p) for p in braceexpand(str(pattern))]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) not found, e.g. {missing[0]}")
    if not paths:
        raise FileNotFoundError(f"no .tar shard in {pattern}")
    return paths


def _count_samples(paths: list[Path]) -> list[int]:
    """Samples per shard: from shards.json beside the shards when it lists them, else counted in the tar."""
    from webdataset.tariterators import base_plus_ext

    listed = {}
    for folder in {p.parent for p in paths}:
        if (folder / "shards.json").is_file():
            for s in json.loads((folder / "shards.json").read_text())["shards"]:
                listed[folder / s["name"]] = s["samples"]
    counts = []
    for p in paths:
        if p not in listed:
            with tarfile.open(p) as tar:
                listed[p] = len({base_plus_ext(m.name)[0] for m in tar if m.isfile()})
        counts.append(listed[p])
    return counts


def _shuffled(samples, size: int, rng: np.random.Generator):
    """Shuffle buffer: once ``size`` samples are held, each new one replaces a random one, which goes out."""
    buffer = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.integers(size)
        buffer[i], sample = sample, buffer[i]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


class ShardStream(torch.utils.data.IterableDataset):
    """The endless batches of one rank's reader (the DataLoader worker's, with workers)."""

    def __init__(self, paths: list[Path], counts: list[int], transform: ImageTransform, modalities: list[str],
                 tokenize, batch_size: int, seed: int, start_step: int, rank: int, world: int, workers: int,
                 buffer: int, keep: dict[str, float] | None = None):
        self.paths, self.counts, self.transform, self.batch_size = paths, counts, transform, batch_size
        self.modalities, self.tokenize = modalities, tokenize
        self.seed, self.start_step, self.rank, self.world, self.buffer = seed, start_step, rank, world, buffer
        self.per_rank = max(workers, 1)
        self.readers = world * self.per_rank
        self.keep = keep  # modality -> probability of keeping a sample (balanced streaming), or None

    def reader_shards(self, p: int, g: int) -> list[int]:
        """Indices of the shards reader ``g`` reads in pass ``p``."""
        order = np.random.default_rng(derive_seed(self.seed, "shard order", p)).permutation(len(self.paths))
        return order[g :: self.readers].tolist()

    def raw_samples(self, g: int, skip: int):
        """Undecoded samples of reader ``g``, pass after pass, from position ``skip`` on. Passes
        wholly before ``skip`` are not read at all."""
        from webdataset.tariterators import tarfile_samples

        for p in itertools.count():
            mine = self.reader_shards(p, g)
            n = sum(self.counts[i] for i in mine)
            if self.keep is None and skip >= n:
                skip -= n
                continue
            samples = tarfile_samples({"url": str(self.paths[i])} for i in mine)
            if self.keep is not None:
                samples = self.balanced(samples, np.random.default_rng(derive_seed(self.seed, "balance", p, g)))
            rng = np.random.default_rng(derive_seed(self.seed, "shuffle buffer", p, g))
            for sample in _shuffled(samples, self.buffer, rng):
                if skip:
                    skip -= 1
                    continue
                yield sample

    def balanced(self, samples, rng: np.random.Generator):
        """Keep each sample with its modality's probability (``keep``)."""
        for sample in samples:
            if rng.random() < self.keep.get(json.loads(sample["json"]).get("modality") or "unknown", 1.0):
                yield sample

    def item(self, raw: dict, g: int, position: int) -> dict:
        """What ``collate`` takes: ``collate_item``'s dict, or dict(row, error)."""
        key, meta = raw["__key__"], json.loads(raw["json"])
        ext = next((k for k in raw if k not in ("txt", "json") and not k.startswith("__")), None)
        try:
            image = self.transform.load_bytes(raw.get(ext, b""), f"{Path(raw['__url__']).name}:{key}.{ext} "
                                     f"({meta.get('source')})")
        except ImageLoadError as exc:
            return {"row": key, "error": str(exc)}
        seed = derive_seed(self.seed, "augment", g, position)  # this draw's, wherever it is loaded
        x = self.transform.augment(image, torch.Generator().manual_seed(seed))
        modality = modality_index(self.modalities, meta.get("modality"))
        return collate_item(x, raw["txt"].decode("utf-8"), modality, key, self.tokenize)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()  # the DataLoader starts its round at worker 0, i.e. step start_step
        worker = (info.id + self.start_step) % self.per_rank if info is not None else 0
        g = self.rank * self.per_rank + worker
        position = (self.start_step - worker + self.per_rank - 1) // self.per_rank * self.batch_size
        samples = self.raw_samples(g, position)
        while True:
            batch = list(itertools.islice(samples, self.batch_size))
            yield collate([self.item(s, g, position + i) for i, s in enumerate(batch)], self.tokenize)
            position += self.batch_size


class ShardBatches:
    """Iterable of this rank's batches (``collate``'s dict format), endless; every ``iter()``
    starts again at ``start_step``. ``steps_per_epoch`` steps of all ranks see about one pass."""

    def __init__(self, stream: ShardStream, workers: int, modality_counts: dict[str, int]):
        self.stream, self.shards, self.modality_counts = stream, stream.paths, modality_counts
        self.samples = sum(stream.counts)
        self.steps_per_epoch = self.samples // (stream.batch_size * stream.world)
        self.loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                                  persistent_workers=workers > 0,
                                                  generator=torch.Generator().manual_seed(stream.seed))

    def __iter__(self):
        return iter(self.loader)


def modality_counts(paths: list[Path]) -> dict[str, int]:
    """Samples per modality ("unknown" for none) from the shards.json files beside ``paths``; empty
    when a folder has no such counts."""
    counts = Counter()
    for folder in {p.parent for p in paths}:
        summary = json.loads((folder / "shards.json").read_text()) if (folder / "shards.json").is_file() else {}
        if "per_modality" not in summary:
            return {}
        counts.update(summary["per_modality"])
    return dict(counts)


def _balanced_keep(counts: dict[str, int], pattern) -> dict[str, float]:
    """modality -> min count / its count: the probability of keeping a sample in balanced streaming."""
    if not counts:
        raise ManifestError(f"{pattern}: balanced streaming needs the per-modality counts of shards.json "
                            "(written by `medmoe data shard`)")
    return {m: min(counts.values()) / c for m, c in counts.items()}


def shard_batches(pattern: str | Path, transform: ImageTransform, modalities: list[str], batch_size: int, seed: int,
                  start_step: int = 0, rank: int = 0, world: int = 1, workers: int = 0,
                  buffer: int = SHUFFLE_BUFFER, balance: bool = False, tokenize=None) -> ShardBatches:
    """This rank's endless, shuffled, augmented training batches from webdataset shards (see the
    module docstring for the order); ``batch_size`` is the per-rank batch; ``transform``: the model's
    input (``ImageTransform.of(config)``); ``tokenize``: its ``text.tokenize`` (None: reports stay text)."""
    if not 0 <= rank < world or batch_size < 1 or start_step < 0 or workers < 0:
        raise ValueError(f"bad arguments: rank {rank}, world {world}, batch size {batch_size}, "
                         f"start step {start_step}, workers {workers}")
    paths = shard_paths(pattern)
    readers = world * max(workers, 1)
    if len(paths) < readers:
        raise ValueError(f"{len(paths)} shard(s) for {readers} readers ({world} process(es) x {max(workers, 1)} "
                         "worker(s)); every reader needs a shard: reshard with a smaller --shard-size or use "
                         "fewer workers / processes")
    counts = modality_counts(paths)
    stream = ShardStream(paths, _count_samples(paths), transform, modalities, tokenize, batch_size, seed, start_step,
                         rank, world, workers, buffer, _balanced_keep(counts, pattern) if balance else None)
    if sum(stream.counts) < batch_size * world:
        raise ValueError(f"a step takes {batch_size * world} samples ({world} x {batch_size}) but the shards "
                         f"hold {sum(stream.counts)}")
    return ShardBatches(stream, workers, counts)
