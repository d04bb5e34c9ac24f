"""MedSynth: determinism, splits, balance, and agreement of masks, reports and images."""
import json
import math
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from medmoe.data.synth import FINDINGS, MODALITIES, P_NORMAL, SPLITS, Difficulty, Sample, generate, render_sample
from medmoe.data.synth.writer import _write_png

ABNORMAL = [(m, f) for m in MODALITIES for f in FINDINGS[m][1:]]
SIZE_WORDS = {"small": ("small", "mild"), "moderate": ("moderate",), "large": ("large", "marked")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """300 samples at 96 px: (folder, manifest rows)."""
    root = tmp_path_factory.mktemp("medsynth")
    manifest = generate(root, 300, seed=0, size=96, progress=False)
    return root, [json.loads(line) for line in manifest.read_text().splitlines()]


def read_png(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image)


def load_mask(root, row):
    mode, mask = read_png(root / row["mask"])
    assert mode == "L" and set(np.unique(mask)) <= {0, 255}
    return mask > 0


def centroid(mask):
    """(row, column) of the mask centroid as fractions of the image height and width."""
    ys, xs = np.nonzero(mask)
    return (ys.mean() + 0.5) / mask.shape[0], (xs.mean() + 0.5) / mask.shape[1]


def samples(modality, finding, n, size=96, difficulty=Difficulty(), seed=0):
    return [render_sample(np.random.default_rng([seed, i]), modality, finding, size, difficulty) for i in range(n)]


def test_public_constants():
    assert MODALITIES == ("xray", "ct", "mri", "ultrasound")
    for m in MODALITIES:
        assert FINDINGS[m][0] == "normal" and len(FINDINGS[m]) >= 3 and len(set(FINDINGS[m])) == len(FINDINGS[m])
    assert Difficulty() == Difficulty(noise=1.0, contrast=2.5, lesion_scale=1.8)
    with pytest.raises(ValueError):
        Difficulty(noise=-1.0)
    with pytest.raises(ValueError):
        render_sample(np.random.default_rng(0), "mri", "cyst", 96, Difficulty())


def test_manifest_rows_and_files(dataset):
    root, rows = dataset
    assert len(rows) == 300
    for i, row in enumerate(rows):
        assert row["image"] == f"images/{i:06d}.png"
        assert row["finding"] in FINDINGS[row["modality"]] and row["labels"] == [row["finding"]]
        mode, image = read_png(root / row["image"])
        assert mode == "L" and image.shape == (96, 96)
        if row["finding"] == "normal":
            assert row["mask"] is None and row["location"] is None and row["size"] is None
        else:
            assert row["mask"] == f"masks/{i:06d}.png" and row["size"] in SIZE_WORDS
            assert load_mask(root, row).any()
    n_abnormal = sum(row["finding"] != "normal" for row in rows)
    assert len(list((root / "masks").iterdir())) == n_abnormal


def test_same_seed_is_byte_identical_and_prefix_stable(tmp_path):
    a = generate(tmp_path / "a", 24, seed=5, progress=False)
    b = generate(tmp_path / "b", 24, seed=5, progress=False)
    short = generate(tmp_path / "short", 9, seed=5, progress=False)
    other = generate(tmp_path / "other", 24, seed=6, progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_text().splitlines()[:9] == short.read_text().splitlines()  # sample i ignores n
    for sub in ("images", "masks"):
        names = sorted(p.name for p in (tmp_path / "a" / sub).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "b" / sub).iterdir())
        for name in names:
            assert (tmp_path / "a" / sub / name).read_bytes() == (tmp_path / "b" / sub / name).read_bytes()
            if (tmp_path / "short" / sub / name).exists():
                assert (tmp_path / "a" / sub / name).read_bytes() == (tmp_path / "short" / sub / name).read_bytes()
    assert a.read_text() != other.read_text()
    assert (tmp_path / "a/images/000000.png").read_bytes() != (tmp_path / "other/images/000000.png").read_bytes()


def test_default_draws_follow_the_documented_scheme(tmp_path):
    """With mix=None every existing seed keeps its files: sample i's generator (seed, i) draws the split,
    then a uniform integer for the modality, then the finding, and then renders the sample."""
    rows = [json.loads(line) for line in generate(tmp_path, 40, seed=7, size=32, progress=False).read_text().splitlines()]
    for i, row in enumerate(rows):
        rng = np.random.default_rng([7, i])
        u = rng.random()
        modality = MODALITIES[rng.integers(len(MODALITIES))]
        findings = FINDINGS[modality]
        finding = findings[0] if rng.random() < P_NORMAL else findings[1 + rng.integers(len(findings) - 1)]
        sample = render_sample(rng, modality, finding, 32)
        assert (row["split"], row["modality"], row["finding"]) == (next(s for s, p in SPLITS if u < p), modality, finding)
        assert row["report"] == sample.report and np.array_equal(read_png(tmp_path / row["image"])[1], sample.image)


def test_sanity_set_varies_only_the_finding_and_reports_only_it(tmp_path):
    """Every sample has a finding; two samples of a modality differ only in and around their findings (the
    cyst's posterior enhancement), and each report is its finding sentence alone."""
    rows = [json.loads(line) for line in
            generate(tmp_path, 40, seed=3, size=64, progress=False, sanity=True).read_text().splitlines()]
    assert all(r["finding"] != "normal" and r["mask"] for r in rows)
    for row in rows:
        names = set(row["finding"].split())
        assert names <= set(re.findall(r"\w+", row["report"].lower())) and row["report"].count(".") == 1
        assert row["location"] is None or row["location"] in row["report"].lower()  # cardiomegaly has none
    for modality in MODALITIES:
        same = [r for r in rows if r["modality"] == modality and r["finding"] != "cardiomegaly"][:2]
        if len(same) < 2:
            continue
        (a, b), (ma, mb) = ([read_png(tmp_path / r[k])[1] for r in same] for k in ("image", "mask"))
        outside = (ma == 0) & (mb == 0)
        if modality == "ultrasound":  # the enhancement below a cyst reaches past its mask
            outside &= np.arange(64)[:, None] < min(np.nonzero(ma)[0].min(), np.nonzero(mb)[0].min())
        assert np.array_equal(a[outside], b[outside]) and not np.array_equal(a, b)
    # the default set is untouched by the option: the same files as before it existed (see the scheme test)
    assert generate(tmp_path / "plain", 5, seed=3, size=64, progress=False).read_text() != \
        (tmp_path / "manifest.jsonl").read_text()


MIX = {"xray": 0.6, "ct": 0.25, "mri": 0.1, "ultrasound": 0.05}


def test_modality_mix_proportions(tmp_path):
    rows = [json.loads(line) for line in generate(tmp_path, 400, seed=1, size=32, mix=MIX, progress=False)
            .read_text().splitlines()]
    counts = Counter(row["modality"] for row in rows)
    for m, p in MIX.items():
        assert abs(counts[m] / 400 - p) < 3 * math.sqrt(p * (1 - p) / 400), counts
    for m in MODALITIES:  # the split and finding draws are unchanged by the mix
        findings = Counter(row["finding"] for row in rows if row["modality"] == m)
        assert set(findings) == set(FINDINGS[m]) and 0.15 < findings["normal"] / counts[m] < 0.55, findings
    assert abs(Counter(row["split"] for row in rows)["train"] / 400 - 0.8) < 0.07


def test_modality_mix_is_deterministic_normalised_and_skips_absent_modalities(tmp_path):
    full = generate(tmp_path / "full", 30, seed=2, size=32, mix=MIX, progress=False)
    short = generate(tmp_path / "short", 12, seed=2, size=32, mix=MIX, progress=False)
    scaled = generate(tmp_path / "scaled", 30, seed=2, size=32, mix={m: 20 * w for m, w in MIX.items()},
                      progress=False)
    assert full.read_text().splitlines()[:12] == short.read_text().splitlines()  # sample i ignores n
    for name in sorted(p.name for p in (tmp_path / "short" / "images").iterdir()):
        assert (tmp_path / "full/images" / name).read_bytes() == (tmp_path / "short/images" / name).read_bytes()
    assert scaled.read_bytes() == full.read_bytes()
    two = generate(tmp_path / "two", 40, seed=2, size=32, mix={"ct": 1, "ultrasound": 3}, progress=False)
    counts = Counter(json.loads(line)["modality"] for line in two.read_text().splitlines())
    assert set(counts) == {"ct", "ultrasound"} and counts["ultrasound"] > counts["ct"]


@pytest.mark.parametrize("mix", [{}, {"bone": 1.0}, {"xray": 0.0}, {"ct": -1.0}, {"mri": float("nan")},
                                 {"xray": "0.5"}])
def test_bad_modality_mix_is_rejected_before_writing(tmp_path, mix):
    with pytest.raises(ValueError, match="mix"):
        generate(tmp_path / "out", 4, mix=mix, progress=False)
    assert not (tmp_path / "out").exists()


def test_png_writer_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(96, 96), (7, 13), (224, 224)]:
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        _write_png(tmp_path / "x.png", image)
        mode, decoded = read_png(tmp_path / "x.png")
        assert mode == "L" and np.array_equal(decoded, image)


def test_splits_modalities_and_findings_are_balanced(dataset):
    _, rows = dataset
    splits = Counter(row["split"] for row in rows)
    assert abs(splits["train"] / 300 - 0.8) < 0.07
    assert abs(splits["val"] / 300 - 0.1) < 0.05 and abs(splits["test"] / 300 - 0.1) < 0.05
    modalities = Counter(row["modality"] for row in rows)
    assert set(modalities) == set(MODALITIES) and all(45 <= c <= 105 for c in modalities.values())
    for m in MODALITIES:
        findings = Counter(row["finding"] for row in rows if row["modality"] == m)
        assert 0.2 < findings["normal"] / modalities[m] < 0.47
        assert set(findings) == set(FINDINGS[m])


def test_reports_name_finding_location_and_size(dataset):
    root, rows = dataset
    for row in rows:
        report = row["report"]
        assert 8 <= len(report.split()) <= 30, report
        if row["finding"] == "normal":
            assert re.search(r"\bno\b|normal|unremarkable", report.lower()), report
            continue
        assert row["finding"] in report.lower(), report
        if row["location"]:
            assert row["location"] in report.lower(), report
        mm = re.search(r"(\d+) mm", report)
        assert mm or any(w in report.lower() for w in SIZE_WORDS[row["size"]]), report
        if mm:  # the measurement is the mask's equivalent-circle diameter
            area = load_mask(root, row).sum()
            fov = {"ct": 380, "mri": 240, "ultrasound": 100}[row["modality"]]
            assert int(mm.group(1)) == round(2 * math.sqrt(area / math.pi) * fov / 96), report


def test_location_words_agree_with_mask_centroid(dataset):
    """Radiological convention: the patient's right is the image left."""
    root, rows = dataset
    checked = Counter()
    for row in rows:
        if row["finding"] == "normal" or row["location"] is None:
            continue
        y, x = centroid(load_mask(root, row))
        words = row["location"].split()
        if "right" in words:
            assert x < 0.5, row
        if "left" in words:
            assert x > 0.5, row
        if {"upper", "superficial"} & set(words):
            assert y < 0.5, row
        if {"lower", "deep"} & set(words):
            assert y > 0.5, row
        if "frontal" in words:
            assert y < 0.4, row
        if "occipital" in words:
            assert y > 0.625, row
        checked.update(words)
    assert min(checked[w] for w in ("left", "right", "superficial", "deep")) > 0


@pytest.mark.parametrize("modality,finding", ABNORMAL)
def test_mask_covers_drawn_finding(modality, finding):
    """Rendering 'normal' from the same generator state changes pixels only inside the mask
    (for a cyst, also behind it: posterior acoustic enhancement)."""
    for seed in range(4):
        sick = render_sample(np.random.default_rng(seed), modality, finding, 96, Difficulty())
        healthy = render_sample(np.random.default_rng(seed), modality, "normal", 96, Difficulty())
        assert isinstance(sick, Sample) and healthy.mask is None
        assert sick.mask.dtype == bool and sick.mask.shape == sick.image.shape and sick.mask.any()
        changed = sick.image != healthy.image
        assert (changed & sick.mask).any()
        outside = changed & ~sick.mask
        if finding == "cyst":
            outside[np.nonzero(sick.mask.any(1))[0].min():] = False
        assert not outside.any()


@pytest.mark.parametrize("modality,finding", ABNORMAL)
def test_size_words_bucket_mask_area(modality, finding):
    ranked = sorted((s.mask.sum(), s.size_word) for s in samples(modality, finding, 40, seed=1))
    order = [list(SIZE_WORDS).index(word) for _, word in ranked]
    assert order == sorted(order)  # small < moderate < large in mask area
    assert all(order.count(k) >= 4 for k in range(3))  # every bucket used at the default difficulty


def test_finding_area_orders_by_modality():
    """Large diffuse chest findings, medium abdominal lesions, small brain foci."""
    median = {m: np.median([s.mask.mean() for f in FINDINGS[m][1:] for s in samples(m, f, 12)]) for m in MODALITIES}
    assert median["xray"] > 2 * median["ct"] and median["ct"] > 1.5 * median["mri"]


def test_layout_scales_with_image_size():
    for m, f in ABNORMAL:
        small, large = samples(m, f, 3, size=96), samples(m, f, 3, size=224)
        for a, b in zip(small, large):
            assert a.location == b.location
            assert abs(b.mask.mean() - a.mask.mean()) < 0.25 * a.mask.mean() + 3 / 96**2  # 3 px slack
            assert b.image.shape == (224, 224)


def test_difficulty_knobs():
    healthy = render_sample(np.random.default_rng(3), "ct", "normal", 96, Difficulty())
    invisible = render_sample(np.random.default_rng(3), "ct", "liver lesion", 96, Difficulty(contrast=0.0))
    assert np.array_equal(invisible.image, healthy.image) and invisible.mask.any()
    doubled = Difficulty(lesion_scale=2 * Difficulty().lesion_scale)  # twice the radii: about 4x the area
    bigger = [s.mask.sum() for s in samples("ct", "liver lesion", 8, difficulty=doubled)]
    assert np.median(bigger) > 2 * np.median([s.mask.sum() for s in samples("ct", "liver lesion", 8)])
    for m in MODALITIES:  # noise: pixel-to-pixel differences grow with it
        clean, noisy = (samples(m, "normal", 1, difficulty=Difficulty(noise=k))[0].image.astype(float) for k in (0, 2))
        assert np.abs(np.diff(noisy)).mean() > np.abs(np.diff(clean)).mean()


def test_tiny_findings_still_have_masks():
    for m, f in ABNORMAL:
        for s in samples(m, f, 3, size=64, difficulty=Difficulty(lesion_scale=0.01)):
            assert s.mask.any() and s.size_word in SIZE_WORDS and f in s.report.lower()
