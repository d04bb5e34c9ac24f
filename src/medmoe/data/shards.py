"""Webdataset tar shards: written from a manifest, streamed back as training batches.

A shard sample is ``KEY.EXT`` (the image), ``KEY.txt`` (the report) and ``KEY.json`` (modality, labels,
split, manifest row, source path). KEY is the zero-padded manifest row number. The image is the source
file's bytes, never re-encoded (EXT keeps its format: png, jpg, dcm, nii.gz, ...), or with ``max_side`` the
image at training resolution: decoded (``load_image``: windowed, rescaled to [0, 1], colour kept), resized
so that its longer side is at most ``max_side`` (never enlarged; antialiased bilinear, as the model's input
is made) and stored as a JPEG of quality ``quality`` when the source is a JPEG, else as a PNG, 16-bit for a
grey source of more than 8 bits (DICOM, NIfTI, .npy, 16-bit pictures), 8-bit for the rest; its JSON then says ``"prepared": "jpeg" | "png8" | "png16"`` and the reader
maps it back to [0, 1] by its bit depth (``decode_prepared``). Writing runs in ``workers`` processes, one
shard each at a time, and resumes: OUT/plan.json records what is written, a shard counts once its tar and
its NNNNNN.json summary are both in place, and the same command run again writes only the missing ones.

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

import io
import itertools
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import modality_index
from ..errors import ImageLoadError, ManifestError
from ..files import atomic_write_text
from ..seeding import derive_seed
from .dataset import collate, collate_item
from .io import LUMA, is_dicom, load_image
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


def prepared_image(path: Path, max_side: int, quality: int) -> tuple[bytes, str, str]:
    """(encoded bytes, extension, kind) of ``path`` at training resolution (module docstring); ImageLoadError
    when it cannot be decoded."""
    from PIL import Image

    image = load_image(path, colour="rgb", min_side=max_side)
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        x = torch.from_numpy(image).movedim(-1, 0)[None] if image.ndim == 3 else torch.from_numpy(image)[None, None]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)
        image = (x.movedim(0, -1) if image.ndim == 3 else x[0]).numpy()
    kind = _prepared_kind(path)
    if kind == "png16" and image.ndim == 3:
        kind = "png8"  # a colour source has 8 bits a channel (and Pillow writes no 16-bit colour PNG)
    buffer = io.BytesIO()
    if kind == "png16":
        Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(buffer, format="PNG", compress_level=1)
    else:
        picture = Image.fromarray(np.round(image * 255).astype(np.uint8))
        picture.save(buffer, format="JPEG", quality=quality) if kind == "jpeg" else \
            picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue(), "jpg" if kind == "jpeg" else "png", kind


def _prepared_kind(path: Path) -> str:
    """jpeg for a JPEG source, png8 for another 8-bit picture, png16 for the rest (DICOM, NIfTI, .npy, 16-bit)."""
    from PIL import Image, UnidentifiedImageError

    if is_dicom(path):
        return "png16"
    try:
        with Image.open(path) as im:
            return "jpeg" if im.format == "JPEG" else "png8" if im.mode in ("1", "L", "P", "RGB", "RGBA", "LA") \
                else "png16"
    except (UnidentifiedImageError, OSError):
        return "png16"


def decode_prepared(data: bytes, kind: str, colour: str) -> np.ndarray:
    """A prepared shard image back to [0, 1] by its bit depth: grey [H, W], or [H, W, 3] for a colour one
    under ``colour="rgb"`` (grey policy: BT.601 luma, as ``load_image``)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        values = np.asarray(im, dtype=np.float32)
    values /= 65535.0 if kind == "png16" else 255.0
    if values.ndim == 3 and colour != "rgb":
        values = values @ LUMA
    return values


def _write_shard(task) -> dict:
    """Write shard ``name`` of ``rows`` to OUT atomically, then its summary NNNNNN.json; returns the summary."""
    out, name, rows, root, max_side, quality = task
    from webdataset import TarWriter

    skipped, modalities, written = [], Counter(), 0
    with open(out / (name + ".tmp"), "wb") as f, TarWriter(f, encoder=False) as tar:
        for row in rows:
            meta = {"modality": row.modality, "labels": row.labels, "split": row.split, "row": row.row,
                    "source": os.path.relpath(row.image, root)}
            try:
                if max_side:
                    image, ext, meta["prepared"] = prepared_image(row.image, max_side, quality)
                else:
                    image, ext = row.image.read_bytes(), _image_ext(row.image)
            except ImageLoadError as exc:
                skipped.append({"row": row.row, "reason": str(exc)})
                continue
            except OSError as exc:
                skipped.append({"row": row.row, "reason": f"cannot read {row.image}: {exc.strerror or exc}"})
                continue
            tar.write({"__key__": f"{row.row:09d}", ext: image, "txt": row.report.encode("utf-8"),
                       "json": json.dumps(meta).encode("utf-8")})
            modalities[row.modality or "unknown"] += 1
            written += 1
    if written:
        os.replace(out / (name + ".tmp"), out / name)
    else:
        os.remove(out / (name + ".tmp"))
    summary = {"name": name, "samples": written, "per_modality": dict(modalities), "skipped": skipped}
    atomic_write_text(out / name.replace(".tar", ".json"), json.dumps(summary) + "\n")
    return summary


def write_shards(manifest: Manifest | str | Path, out: str | Path, shard_size: int, split: str | None = None,
                 progress: bool = True, max_side: int | None = None, quality: int = 90, workers: int = 1) -> dict:
    """Write the usable rows (of ``split``, if given; ``Manifest.split`` semantics) to OUT/000000.tar,
    ... (at most ``shard_size`` samples each) and OUT/shards.json; returns the summary written there.
    ``max_side``: store images at training resolution (module docstring); ``workers``: processes writing
    shards side by side. Run again with the same settings, it writes only the shards still missing."""
    from tqdm import tqdm

    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    if max_side is not None and max_side < 8 or not 1 <= quality <= 100:
        raise ValueError(f"--max-side must be >= 8 and --quality 1..100 (got {max_side}, {quality})")
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    rows = manifest.rows if split is None else manifest.split(split)
    if not rows:
        raise ManifestError(f"{manifest.path}: no usable row" + (f" in split {split!r}" if split else ""))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = {"manifest": str(manifest.path.resolve()), "split": split, "rows": len(rows), "shard_size": shard_size,
            "max_side": max_side, "quality": quality if max_side else None}
    if (out / "plan.json").is_file() and json.loads((out / "plan.json").read_text()) != plan:
        raise FileExistsError(f"{out} holds shards written with other settings ({out / 'plan.json'}); write to a "
                              "new or empty folder")
    if not (out / "plan.json").is_file() and any(out.glob("*.tar")):
        raise FileExistsError(f"{out} already holds .tar files; write shards to a new or empty folder")
    atomic_write_text(out / "plan.json", json.dumps(plan, indent=2) + "\n")
    root = manifest.path.parent.resolve()
    tasks = [(out, f"{i:06d}.tar", rows[start : start + shard_size], root, max_side, quality)
             for i, start in enumerate(range(0, len(rows), shard_size))]
    done = {t[1]: json.loads((out / t[1].replace(".tar", ".json")).read_text()) for t in tasks
            if (out / t[1].replace(".tar", ".json")).is_file()}
    todo = [t for t in tasks if t[1] not in done]
    bar = tqdm(total=len(rows), initial=len(rows) - sum(len(t[2]) for t in todo), desc="shards", unit="img",
               disable=not progress)
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(workers, len(todo))) as pool:
            for summary in pool.imap_unordered(_write_shard, todo):
                done[summary["name"]] = summary
                bar.update(len(tasks[int(summary["name"][:6])][2]))
    else:
        for task in todo:
            done[task[1]] = _write_shard(task)
            bar.update(len(task[2]))
    bar.close()
    shards = [{"name": t[1], "samples": done[t[1]]["samples"]} for t in tasks if done[t[1]]["samples"]]
    if not shards:
        raise ManifestError(f"{manifest.path}: no image could be read")
    modalities = sum((Counter(d["per_modality"]) for d in done.values()), Counter())
    summary = {"shards": shards, "samples": sum(s["samples"] for s in shards),
               "per_modality": dict(sorted(modalities.items())), "max_side": max_side,
               "skipped": list(manifest.unusable) + [s for t in tasks for s in done[t[1]]["skipped"]]}
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
        name = f"{Path(raw['__url__']).name}:{key}.{ext} ({meta.get('source')})"
        try:
            if "prepared" in meta:  # at training resolution, already in [0, 1]
                image = decode_prepared(raw[ext], meta["prepared"], self.transform.colour)
            else:
                image = self.transform.load_bytes(raw.get(ext, b""), name, reduced=True)
        except ImageLoadError as exc:
            return {"row": key, "error": str(exc)}
        except (OSError, ValueError, KeyError) as exc:
            return {"row": key, "error": f"{name}: cannot decode image ({type(exc).__name__}: {exc})"}
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
