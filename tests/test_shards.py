"""Webdataset shards: every field round-trips, and the training stream is disjoint across ranks,
deterministic and exactly resumable, with and without DataLoader workers."""
import itertools
import json
import shutil
import tarfile

import numpy as np
import pydicom.data
import pytest
import torch

from medmoe.cli import main
from medmoe.data.io import load_image, load_image_bytes
from medmoe.data.manifest import read_manifest
from medmoe.errors import ManifestError
from medmoe.data.shards import shard_batches, write_shards
from medmoe.data.transforms import ImageTransform

MODALITIES = ["xray", "ct", "mri", "ultrasound"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """40 MedSynth PNGs, a real DICOM without extension, a NIfTI volume, a corrupt PNG and a missing file."""
    import nibabel

    from medmoe.data.synth import generate

    root = tmp_path_factory.mktemp("data")
    path = generate(root, n=40, seed=1, size=64, progress=False)
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm", download=False), root / "images" / "ct_small")
    volume = np.random.default_rng(0).random((20, 24, 5)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), root / "images" / "brain.nii.gz")
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    extra = [{"image": "images/ct_small", "report": "Axial CT slice.", "split": "train", "labels": ["normal"]},
             {"image": "images/brain.nii.gz", "report": "MRI brain.", "modality": "MR", "split": "train"},
             {"image": "images/broken.png", "report": "Normal chest.", "modality": "xray", "split": "train"},
             {"image": "images/missing.png", "report": "Normal."}]
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in extra)
    return path


@pytest.fixture(scope="module")
def shards(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    return out, write_shards(manifest, out, shard_size=5, progress=False)


def members(tar_path):
    with tarfile.open(tar_path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def batches(n, **kw):
    args = dict(transform=ImageTransform(32), modalities=MODALITIES, batch_size=4, seed=7) | kw
    return list(itertools.islice(shard_batches(**args), n))


def same(a, b):
    return len(a) == len(b) and all(x["rows"] == y["rows"] and torch.equal(x["images"], y["images"]) and x["reports"] == y["reports"]
               and torch.equal(x["modality"], y["modality"]) and x["skipped"] == y["skipped"] for x, y in zip(a, b))


def test_bytes_decode_like_files(manifest):
    root = manifest.parent
    for name in ("images/000000.png", "images/ct_small", "images/brain.nii.gz"):
        np.testing.assert_array_equal(load_image_bytes((root / name).read_bytes(), name), load_image(root / name))


def test_shards_round_trip_every_field(manifest, shards):
    out, summary = shards
    rows = read_manifest(manifest).rows
    assert summary["samples"] == len(rows) == 43
    assert [s["samples"] for s in summary["shards"]] == [5] * 8 + [3]
    assert [s["name"] for s in summary["shards"]] == [f"{i:06d}.tar" for i in range(9)]
    assert json.loads((out / "shards.json").read_text()) == summary
    assert summary["skipped"] == [{"row": 44, "reason": "image file not found: images/missing.png"}]
    assert sum(summary["per_modality"].values()) == 43 and summary["per_modality"]["ct"] >= 1
    files = {}
    for s in summary["shards"]:
        files |= members(out / s["name"])
    for row in rows:
        key = f"{row.row:09d}"
        ext = {"ct_small": "dcm", "brain.nii.gz": "nii.gz"}.get(row.image.name, row.image.suffix[1:])
        assert files[f"{key}.{ext}"] == row.image.read_bytes()
        assert files[f"{key}.txt"].decode() == row.report
        meta = json.loads(files[f"{key}.json"])
        assert meta == {"modality": row.modality, "labels": row.labels, "split": row.split, "row": row.row,
                        "source": str(row.image.relative_to(manifest.parent.resolve()))}
    assert json.loads(files["000000041.json"])["modality"] == "ct"  # from the DICOM header


def test_split_selection_and_no_usable_row(manifest, tmp_path):
    summary = write_shards(read_manifest(manifest), tmp_path / "test", 100, split="test", progress=False)
    assert summary["samples"] == len(read_manifest(manifest).split("test")) and len(summary["shards"]) == 1
    with pytest.raises(ManifestError, match="no usable row"):
        write_shards(manifest, tmp_path / "none", 100, split="nope", progress=False)
    with pytest.raises(FileExistsError):
        write_shards(manifest, tmp_path / "test", 100, progress=False)


def test_ranks_read_disjoint_shards_and_cover_a_pass(shards):
    out, summary = shards
    pattern = f"{out}/{{000000..000007}}.tar"  # 8 full shards of 5: 20 samples per rank and pass
    runs = [batches(5, pattern=pattern, rank=r, world=2, batch_size=4) for r in (0, 1)]
    seen = [[k for b in run for k in b["rows"] + [s["row"] for s in b["skipped"]]] for run in runs]
    assert len(set(seen[0])) == len(set(seen[1])) == 20 and not set(seen[0]) & set(seen[1])
    assert len(set(seen[0]) | set(seen[1])) == 40
    b = runs[0][0]
    assert b["images"].shape == (len(b["rows"]), 3, 32, 32) and b["modality"].dtype == torch.long
    assert shard_batches(pattern, ImageTransform(32), MODALITIES, 4, 7, world=2).steps_per_epoch == 40 // 8


def test_the_stream_normalises_by_the_models_statistics(shards):
    out, _ = shards
    imagenet = batches(1, pattern=str(out))[0]
    raw = batches(1, pattern=str(out), transform=ImageTransform(32, mean=(0, 0, 0), std=(1, 1, 1)))[0]
    assert raw["rows"] == imagenet["rows"] and 0 <= raw["images"].min() and raw["images"].max() <= 1
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    assert torch.allclose(imagenet["images"] * std + mean, raw["images"], atol=1e-6)


def test_corrupt_image_is_skipped_and_the_stream_goes_on(shards):
    out, summary = shards
    stream = batches(43, pattern=str(out), batch_size=2)  # the folder: 43 samples, exactly two passes
    skipped = [s for b in stream for s in b["skipped"]]
    assert [s["row"] for s in skipped] == ["000000043"] * 2 and "broken.png" in skipped[0]["reason"]
    assert sum(len(b["rows"]) for b in stream) == 86 - 2
    kinds = {r: m for b in stream for r, m in zip(b["rows"], b["modality"].tolist())}
    assert kinds["000000041"] == MODALITIES.index("ct") and kinds["000000042"] == MODALITIES.index("mri")


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_is_deterministic_and_resumes_exactly(shards, workers):
    out, summary = shards
    kw = dict(pattern=str(out), batch_size=4, workers=workers, rank=1, world=2)
    straight = batches(14, **kw)
    assert same(straight, batches(14, **kw))
    assert not same(straight, batches(14, **kw | {"seed": 8}))
    for k in (3, 7):  # a reader's pass is 8-15 samples: resuming inside the first pass, and after it
        assert same(batches(14 - k, **kw, start_step=k), straight[k:])


def test_samples_without_shards_json_and_too_few_shards(shards, tmp_path):
    out, summary = shards
    for s in summary["shards"][:3]:
        shutil.copy(out / s["name"], tmp_path)
    stream = shard_batches(tmp_path / "000001.tar", ImageTransform(32), MODALITIES, 2, 0)
    assert stream.samples == 5 and stream.steps_per_epoch == 2
    three = shard_batches(f"{tmp_path}/{{000000..000002}}.tar", ImageTransform(32), MODALITIES, 2, 0, world=3)
    assert three.samples == 15
    with pytest.raises(ValueError, match="3 shard.*4 readers.*smaller --shard-size"):
        shard_batches(tmp_path, ImageTransform(32), MODALITIES, 2, 0, world=2, workers=2)
    with pytest.raises(FileNotFoundError):
        shard_batches(f"{tmp_path}/{{000000..000009}}.tar", ImageTransform(32), MODALITIES, 2, 0)


def test_data_shard_command(manifest, tmp_path, capsys):
    assert main(["data", "shard", str(manifest), "--out", str(tmp_path / "s"), "--shard-size", "20", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "3 shards" in printed and "43 samples" in printed and "1 skipped" in printed
    assert f"{tmp_path / 's'}/{{000000..000002}}.tar" in printed
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "000000.json", "000000.tar", "000001.json", "000001.tar", "000002.json", "000002.tar", "plan.json", "shards.json"]
    assert main(["data", "shard", str(manifest), "--out", str(tmp_path / "t"), "--shard-size", "20", "--split", "nope"]) == 1


def test_shards_at_training_resolution_read_back_as_the_sources(manifest, tmp_path):
    """--max-side: each image decoded, its longer side brought to 100 (the 128-pixel CT, the 120-pixel JPEG), never
    enlarged (the 64-pixel PNGs), stored as PNG (16-bit for the DICOM and NIfTI) or JPEG for a JPEG; read back, each
    is the source resized as the model resizes, to the precision of its encoding; the stream trains on them."""
    import torch.nn.functional as F
    from PIL import Image

    from medmoe.data.shards import decode_prepared

    jpeg = manifest.parent / "images" / "photo.jpg"
    Image.fromarray((np.random.default_rng(3).random((90, 120)) * 255).astype(np.uint8)).save(jpeg, quality=95)
    with_jpeg = manifest.parent / "with_jpeg.jsonl"
    with_jpeg.write_text(manifest.read_text() + json.dumps({"image": "images/photo.jpg", "report": "A photo."}) + "\n")
    summary = write_shards(with_jpeg, tmp_path / "s", shard_size=7, progress=False, max_side=100, workers=2)
    assert summary["samples"] == 43 and summary["max_side"] == 100 and len(summary["skipped"]) == 2
    kinds = {}
    for tar in sorted((tmp_path / "s").glob("*.tar")):
        files = members(tar)
        for key in (k[: -len(".json")] for k in files if k.endswith(".json")):
            meta = json.loads(files[key + ".json"])
            data = next(v for k, v in files.items() if k.startswith(key + ".") and k.endswith((".png", ".jpg")))
            image = decode_prepared(data, meta["prepared"], "gray")
            source = torch.from_numpy(load_image(manifest.parent / meta["source"]))[None, None]
            expected = F.interpolate(source, size=image.shape, mode="bilinear", antialias=True, align_corners=False)
            error = (torch.from_numpy(image) - expected[0, 0].clamp(0, 1)).abs()
            kinds[meta["source"].split("/")[-1]] = (meta["prepared"], image.shape)
            bound = {"png8": 0.5 / 255, "png16": 0.5 / 65535, "jpeg": 0.1}[meta["prepared"]] + 1e-6
            assert error.max() <= bound and error.mean() < 0.02, (meta["source"], float(error.max()))  # JPEG of noise
    assert kinds["ct_small"] == ("png16", (100, 100)) and kinds["brain.nii.gz"] == ("png16", (24, 20))
    assert kinds["000000.png"] == ("png8", (64, 64)) and kinds["photo.jpg"] == ("jpeg", (75, 100))
    batch = next(iter(shard_batches(tmp_path / "s", ImageTransform(32), MODALITIES, 4, 0)))
    assert batch["images"].shape == (4, 3, 32, 32) and not batch["skipped"]


def test_shard_writing_resumes_and_refuses_other_settings(manifest, tmp_path):
    out = tmp_path / "s"
    first = write_shards(manifest, out, shard_size=10, progress=False)
    (out / "000002.tar").unlink()
    (out / "000002.json").unlink()  # as if stopped while writing the third shard
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = write_shards(manifest, out, shard_size=10, progress=False)
    assert again == first and (out / "000002.tar").is_file()
    assert all((out / name).stat().st_mtime_ns == t for name, t in before.items())  # the others not rewritten
    with pytest.raises(FileExistsError, match="other settings"):
        write_shards(manifest, out, shard_size=10, progress=False, max_side=32)
