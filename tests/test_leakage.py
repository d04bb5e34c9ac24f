"""medmoe data leakage: copies of an image are found however they were resized, re-encoded or exported;
different images (other patients of one modality, other slices of one volume) are not; ids match within
a dataset; hashes are cached; unreadable rows are skipped and counted; the exit status tells CI."""
import json
import os
import shutil

import numpy as np
import pydicom.data
import pytest
from PIL import Image

from medmoe.cli import main
from medmoe.data import leakage
from medmoe.data.io import load_image
from medmoe.data.leakage import MAX_DISTANCE, MAX_HAMMING, HammingIndex, find_leaks, hamming, hash_image
from medmoe.errors import ManifestError


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """60 MedSynth images (all four modalities, 96 px) and their manifest rows."""
    from medmoe.data.synth import generate

    manifest = generate(tmp_path_factory.mktemp("synth"), n=60, seed=3, progress=False)
    return manifest.parent, [json.loads(line) for line in open(manifest)]


def write_manifest(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def image_rows(folder, rows):
    """Manifest rows that name ``folder``'s images by absolute path (manifests may live anywhere)."""
    return [{"image": str(folder / r["image"]), "report": r["report"], "modality": r["modality"]} for r in rows]


def pairs_of(report):
    return [(p.benchmark_row, p.pretrain_row, p.kinds) for p in report.pairs]


def test_resized_jpeg_and_renamed_copies_are_found(synth, tmp_path):
    folder, rows = synth
    source = Image.open(folder / rows[0]["image"])
    source.resize((150, 150), Image.Resampling.BICUBIC).save(tmp_path / "scan_a.jpg", quality=75)  # larger, JPEG q75
    source.resize((77, 77), Image.Resampling.LANCZOS).save(tmp_path / "scan_b.png")  # smaller, PNG
    shutil.copyfile(folder / rows[1]["image"], tmp_path / "renamed.png")
    pre = write_manifest(tmp_path / "pre" / "pre.jsonl", image_rows(folder, rows[:30]))
    bench = write_manifest(tmp_path / "bench.jsonl", [{"image": "scan_a.jpg", "report": "x"}, *image_rows(folder, rows[30:40]),
                                                     {"image": "scan_b.png", "report": "x"},
                                                     {"image": "renamed.png", "report": "x"}])
    report = find_leaks([pre], [bench], progress=False)
    assert pairs_of(report) == [(1, 1, ["near"]), (12, 1, ["near"]), (13, 2, ["exact"])]
    assert all(p.distance <= MAX_DISTANCE and p.hamming <= MAX_HAMMING for p in report.pairs)
    assert report.per_dataset == {"bench.jsonl": {"rows": 13, "skipped": 0, "leaked": 3, "exact": 1, "near": 2,
                                                  "patient": 0, "study": 0, "pairs": 3}}
    assert report.leaked and report.verdict.startswith("LEAK: 3 of 13 benchmark rows")


def test_8_and_16_bit_copies_match(synth, tmp_path):
    folder, rows = synth
    pixels = np.asarray(Image.open(folder / rows[2]["image"]))
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    pre = write_manifest(tmp_path / "pre.jsonl", image_rows(folder, rows[:10]))
    bench = write_manifest(tmp_path / "bench.jsonl", [{"image": "wide.png", "report": "x"}])
    assert [(b, p) for b, p, _ in pairs_of(find_leaks([pre], [bench], progress=False))] == [(1, 3)]


def test_dicom_and_its_png_exports_match(synth, tmp_path):
    folder, rows = synth
    dicom = shutil.copyfile(pydicom.data.get_testdata_file("CT_small.dcm", download=False), tmp_path / "ct.dcm")
    windowed = load_image(dicom)
    Image.fromarray(np.round(windowed * 255).astype(np.uint8)).save(tmp_path / "export8.png")
    Image.fromarray(np.round(windowed * 65535).astype(np.uint16)).save(tmp_path / "export16.png")
    pre = write_manifest(tmp_path / "pre.jsonl", [{"image": "ct.dcm", "report": "x"}, *image_rows(folder, rows[:10])])
    bench = write_manifest(tmp_path / "bench.jsonl", [{"image": "export8.png", "report": "x"},
                                                      {"image": "export16.png", "report": "x"}])
    # the 16-bit export holds the windowed pixels exactly: the same decoded image, whatever the format
    assert pairs_of(find_leaks([pre], [bench], progress=False)) == [(1, 1, ["near"]), (2, 1, ["exact"])]


def test_different_images_of_one_modality_do_not_match(synth, tmp_path):
    folder, rows = synth
    pre = write_manifest(tmp_path / "pre.jsonl", image_rows(folder, rows[:30]))
    bench = write_manifest(tmp_path / "bench.jsonl", image_rows(folder, rows[30:]))
    report = find_leaks([pre], [bench], progress=False)
    assert not report.pairs and not report.leaked and report.verdict.startswith("clean: none of 30 benchmark rows")
    # the pHash alone would have matched some of them: the DCT coefficients told them apart
    assert report.checked["pairs_compared"] > 0
    assert report.checked["pairs_proposed"] < report.checked["all_pairs"] == 900


def test_slices_of_one_volume_do_not_match_but_the_same_slice_does(tmp_path):
    from scipy import ndimage

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[-1:1:16j, -1:1:96j, -1:1:96j]
    body = x**2 / 0.8 + y**2 / 0.6 + z**2 / 1.5 < 1
    volume = body * (0.5 + 20 * (ndimage.gaussian_filter(rng.random((16, 96, 96)), sigma=(3, 4, 4)) - 0.5))
    np.save(tmp_path / "volume.npy", volume.astype(np.float32))
    codes = [hash_image(tmp_path / "volume.npy", k).phash for k in range(16)]
    assert min(bin(a ^ b).count("1") for a, b in zip(codes, codes[1:])) <= MAX_HAMMING  # a hard case for the pHash
    pre = write_manifest(tmp_path / "pre.jsonl", [{"image": "volume.npy", "slice_index": k} for k in range(0, 16, 2)])
    bench = write_manifest(tmp_path / "bench.jsonl", [*({"image": "volume.npy", "slice_index": k} for k in range(1, 16, 2)),
                                                      {"image": "volume.npy", "slice_index": 6}])
    report = find_leaks([pre], [bench], progress=False)
    assert pairs_of(report) == [(9, 4, ["exact"])]
    assert report.checked["pairs_compared"] > 1


def test_patient_and_study_ids_match_within_a_dataset(synth, tmp_path):
    folder, rows = synth
    a, b, c, d, e, f = image_rows(folder, rows[:6])
    pre = write_manifest(tmp_path / "pre.jsonl", [a | {"dataset": "rsna-pneumonia", "patient": "p1"},
                                                  b | {"dataset": "chexpert-5x200", "patient": "p2"},
                                                  c | {"dataset": "mimic-cxr", "subject_id": "10", "study_id": "50"}])
    bench = write_manifest(tmp_path / "bench.jsonl", [d | {"dataset": "rsna-pneumonia", "patient": "p1"},
                                                      e | {"dataset": "rsna-pneumonia", "patient": "p2"},
                                                      f | {"dataset": "mimic-cxr", "patient": "11", "study_id": "50"}])
    report = find_leaks([pre], [bench], progress=False)
    assert pairs_of(report) == [(3, 3, ["study"]), (1, 1, ["patient"])]  # sorted by dataset name
    assert report.pairs[0].distance is None
    assert report.per_dataset["rsna-pneumonia"] == {"rows": 2, "skipped": 0, "leaked": 1, "exact": 0, "near": 0,
                                                         "patient": 1, "study": 0, "pairs": 1}


def test_cli_exit_status_is_0_clean_1_leaked_2_unusable(synth, tmp_path, capsys):
    folder, rows = synth
    pre = write_manifest(tmp_path / "pre.jsonl", image_rows(folder, rows[:20]))
    clean = write_manifest(tmp_path / "clean.jsonl", image_rows(folder, rows[20:30]))
    leaky = write_manifest(tmp_path / "leaky.jsonl", image_rows(folder, rows[18:25]))
    assert main(["data", "leakage", str(pre), "--against", str(clean), "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("clean: none of 10 benchmark rows")
    out = tmp_path / "report.json"
    assert main(["data", "leakage", str(pre), "--against", str(clean), str(leaky), "--quiet", "--json", str(out)]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == ("LEAK: 2 of 17 benchmark rows share an image, patient "
                                                                "or study with the pretraining data (leaky.jsonl 2)")
    written = json.loads(out.read_text())
    assert written["leaked"] and [(p["benchmark_row"], p["pretrain_row"], p["kinds"]) for p in written["pairs"]] == [
        (1, 19, ["exact"]), (2, 20, ["exact"])]
    assert main(["data", "leakage", str(tmp_path / "missing.jsonl"), "--against", str(clean), "--quiet"]) == 2
    assert capsys.readouterr().err == f"medmoe: error: manifest not found: {tmp_path / 'missing.jsonl'}\n"
    assert main(["data", "leakage", str(pre), "--against", str(clean), "--max-hamming", "65"]) == 2
    assert "the pHash threshold must be 0-64 bits" in capsys.readouterr().err


def test_hashes_are_cached_beside_the_manifest(synth, tmp_path, monkeypatch):
    folder, rows = synth
    for r in rows[:8]:
        shutil.copyfile(folder / r["image"], tmp_path / os.path.basename(r["image"]))
    pre = write_manifest(tmp_path / "pre.jsonl", [{"image": os.path.basename(r["image"])} for r in rows[:6]])
    bench = write_manifest(tmp_path / "bench.jsonl", [{"image": os.path.basename(r["image"])} for r in rows[5:8]])
    calls = []
    monkeypatch.setattr(leakage, "hash_image", lambda path, index=None: calls.append(path) or hash_image(path, index))
    first = find_leaks([pre], [bench], progress=False)
    assert len(calls) == 9 and (tmp_path / "pre.jsonl.leakage.npz").is_file()
    calls.clear()
    second = find_leaks([pre], [bench], progress=False)
    assert calls == [] and second.checked["cached"] == 9 and second.to_dict()["pairs"] == first.to_dict()["pairs"]
    changed = tmp_path / os.path.basename(rows[7]["image"])  # a benchmark image replaced by a copy of row 1
    shutil.copyfile(folder / rows[0]["image"], changed)
    os.utime(changed, ns=(0, 10**18))
    third = find_leaks([pre], [bench], progress=False)
    assert calls == [changed] and pairs_of(third) == [(1, 6, ["exact"]), (3, 1, ["exact"])]


def test_unreadable_rows_and_images_are_skipped_and_counted(synth, tmp_path):
    folder, rows = synth
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "blank.png")
    pre = write_manifest(tmp_path / "pre.jsonl", image_rows(folder, rows[:5]))
    bench = write_manifest(tmp_path / "bench.jsonl", [
        *image_rows(folder, rows[4:6]), {"image": "broken.png"}, {"image": "missing.png"}, "{not json",
        {"image": "blank.png"}, {"report": "no image"}, {"image": "broken.png", "slice_index": "middle"}])
    report = find_leaks([pre], [bench], progress=False)
    assert pairs_of(report) == [(1, 5, ["exact"])]
    assert [(s["row"], s["reason"].split(" (")[0]) for s in sorted(report.skipped, key=lambda s: s["row"])] == [
        (3, "cannot decode image"), (4, "image file not found"), (5, "invalid JSON"),
        (6, "constant image, nothing to compare"), (7, "missing 'image'"), (8, "slice_index must be an integer, got 'middle'")]
    assert report.per_dataset["bench.jsonl"]["skipped"] == 3 and "6 rows or images skipped" in report.verdict
    nothing = write_manifest(tmp_path / "nothing.jsonl", [{"image": "broken.png"}])
    with pytest.raises(ManifestError, match="no readable image in the benchmark manifests"):
        find_leaks([pre], [nothing], progress=False)


def test_multi_index_hashing_finds_exactly_the_pairs_within_the_radius():
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2**63, size=40, dtype=np.uint64)

    def near(n):  # codes around a few centres, up to 14 bits away, as clustered as real hashes
        codes = centres[rng.integers(0, len(centres), n)]
        flips = (rng.random((n, 64)) < rng.uniform(0, 0.2, (n, 1))) * (np.uint64(1) << np.arange(64, dtype=np.uint64))
        return codes ^ np.bitwise_or.reduce(flips, axis=1)

    codes, queries = near(2000), near(300)
    index = HammingIndex(codes)
    brute = hamming(queries[:, None], codes[None, :])
    for radius in (0, 3, 8, 10, 13):
        q, i, bits, proposed = index.search(queries, radius)
        assert sorted(zip(q.tolist(), i.tolist())) == sorted(zip(*map(np.ndarray.tolist, np.nonzero(brute <= radius))))
        assert (bits == brute[q, i]).all() and len(q) <= proposed < brute.size
