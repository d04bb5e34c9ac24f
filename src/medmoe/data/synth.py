"""MedSynth: a procedural image-report dataset for end-to-end MedMoE checks without downloads.

Four modalities, each with its own look and its own spatial scale of findings:

    xray        chest radiograph; large diffuse findings   (opacity, cardiomegaly, effusion)
    ct          axial abdominal CT; medium findings        (liver lesion, kidney stone)
    mri         axial brain FLAIR-like slice; small foci   (focal lesion, microbleed)
    ultrasound  sector scan with speckle                   (cyst, solid nodule)

Every abnormal image comes with a boolean finding mask, and a short free-text report whose
finding, location and size words are derived from that mask, so word-region attention can be
scored against ground truth (grounding) as well as zero-shot classification and retrieval.

Conventions
- Coordinates are normalised to [-1, 1] over the image, so a larger ``size`` renders the same
  layout scaled. Physical sizes in reports (mm) use a fixed field of view per modality (_FOV_MM).
- Left/right (xray, ct, mri) follow the radiological convention: the patient's right is on the
  image left. A location containing "right" has its mask centroid in the left half of the image,
  "left" in the right half.
- Vertical location words are image halves: xray "upper"/"lower" zone and ultrasound
  "superficial"/"deep" mean the mask centroid lies above/below the middle row (the ultrasound
  transducer sits at the top); mri lobes are "frontal" (top), "parietal", "occipital" (bottom).
- Size words ("small", "moderate", "large") bucket the mask's equivalent-circle diameter in mm.
- Randomness: each sample draws an anatomy seed first and renders anatomy and noise from it,
  then draws the finding from the caller's generator, so a normal and an abnormal rendering from
  the same generator state differ only where the finding was drawn (see tests/test_synth.py).
  ``generate`` seeds sample i with (seed, i): files are byte-identical per seed, whatever ``n``.

Manifest rows (``manifest.jsonl``, paths relative to its folder):
    {"image": "images/000007.png", "report": "...", "modality": "ct", "split": "train",
     "finding": "liver lesion", "labels": ["liver lesion"], "mask": "masks/000007.png",
     "location": "right hepatic lobe", "size": "small"}
Masks are 8-bit PNGs (0 background, 255 finding); normal images have "mask", "location" and
"size" null.
"""
from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

MODALITIES: tuple[str, ...] = ("xray", "ct", "mri", "ultrasound")
FINDINGS: dict[str, tuple[str, ...]] = {
    "xray": ("normal", "opacity", "cardiomegaly", "effusion"),
    "ct": ("normal", "liver lesion", "kidney stone"),
    "mri": ("normal", "focal lesion", "microbleed"),
    "ultrasound": ("normal", "cyst", "solid nodule"),
}
P_NORMAL = 1 / 3
SPLITS = (("train", 0.8), ("val", 0.9), ("test", 1.0))  # cumulative probabilities

_FOV_MM = {"xray": 400.0, "ct": 380.0, "mri": 240.0, "ultrasound": 100.0}
# equivalent-diameter (mm) thresholds small|moderate and moderate|large, the tertiles at Difficulty()
_SIZE_MM = {
    "opacity": (72.0, 88.0),
    "effusion": (43.0, 62.0),
    "cardiomegaly": (136.0, 146.0),
    "liver lesion": (26.0, 36.0),
    "kidney stone": (11.0, 14.0),
    "focal lesion": (9.0, 11.0),
    "microbleed": (6.0, 8.0),
    "cyst": (11.0, 14.0),
    "solid nodule": (10.0, 13.0),
}


@dataclass(frozen=True)
class Difficulty:
    """Multipliers on the built-in finding appearance; 1.0 is visible but not trivial.

    noise: image noise (xray/ct/mri additive Gaussian, ultrasound speckle depth); 0 = clean.
    contrast: finding intensity against its background; 0 = invisible. Cardiomegaly is a shape
        change and ignores it.
    lesion_scale: finding radii (for cardiomegaly: the enlargement); size words follow the mask.
    """

    noise: float = 1.0
    contrast: float = 1.0
    lesion_scale: float = 1.0


@dataclass
class Sample:
    image: np.ndarray  # uint8 [H, W]
    mask: np.ndarray | None  # bool [H, W]; None for normal
    report: str
    location: str | None
    size_word: str | None


# ----------------------------------------------------------------------------- geometry helpers


@lru_cache(maxsize=8)
def _axes(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]: Y as a column [S, 1], X as a row [1, S]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    return c[:, None], c[None, :]


@lru_cache(maxsize=8)
def _polar(size: int, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Radius and angle (0 = straight down the image) of every pixel around (cx, cy)."""
    Y, X = _axes(size)
    dx, dy = X - cx, Y - cy
    return np.sqrt(dx * dx + dy * dy), np.arctan2(dx, dy)


def _ellipse(size, cx, cy, rx, ry, angle=0.0):
    """Squared normalised distance from an ellipse's centre: < 1 inside."""
    Y, X = _axes(size)
    dx, dy = X - cx, Y - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = dx * c + dy * s, dy * c - dx * s
    return (dx / rx) ** 2 + (dy / ry) ** 2


def _soft(d2, edge):
    """1 in the middle, ramping to exactly 0 at the boundary d2 = 1 (ramp width `edge` in d2)."""
    return np.clip((1.0 - d2) * (1.0 / edge), 0.0, 1.0)


def _paint(img, alpha, value):
    img += alpha * (value - img)


def _smooth(rng, size, cells):
    """Low-frequency texture in about [0, 1]: a cells x cells random grid, bicubic-upsampled."""
    grid = rng.random((cells, cells), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.Resampling.BICUBIC))


def _min_r(r, size):
    """Keep a radius at least 0.75 px so every finding covers at least one pixel centre."""
    return max(r, 1.5 / size)


def _centroid(mask):
    ys, xs = np.nonzero(mask)
    return ys.mean() / mask.shape[0] * 2 - 1, xs.mean() / mask.shape[1] * 2 - 1


def _side(mask):
    """Radiological convention: image left is the patient's right."""
    return "right" if _centroid(mask)[1] < 0 else "left"


# ----------------------------------------------------------------------------- modalities
# Each renderer draws all anatomy (and noise) from `anat`, then the finding from `rng`, and
# returns (float image, finding mask or None, location word or None).


def _xray(anat, rng, finding, size, d):
    Y, X = _axes(size)
    w = 1.0 + 0.05 * anat.standard_normal()
    lung_cx, lung_rx, lung_cy, lung_ry = 0.37 * w, 0.27 * w, -0.03, 0.6
    heart = [0.1 + 0.04 * anat.standard_normal(), 0.3, 0.22 * w, 0.19]
    dome = 0.32 + 0.04 * anat.standard_normal()
    rib_phase = anat.uniform(0, 2 * math.pi)
    tissue, lung_tex = _smooth(anat, size, 5), _smooth(anat, size, 12)
    noise = anat.standard_normal((size, size), dtype=np.float32)

    if finding == "cardiomegaly":
        f = 1.0 + rng.uniform(0.15, 0.4) * d.lesion_scale
        heart = [heart[0] + 0.05 * (f - 1), heart[1] + 0.03 * (f - 1), heart[2] * f, heart[3] * f**0.5]
    heart_d2 = _ellipse(size, *heart)
    heart_a = _soft(heart_d2, 0.3)
    air = []  # per lung (image left, image right): aerated fraction
    for s in (-1, 1):
        dome_y = dome + 0.03 * s + 0.26 * ((X - s * lung_cx) / lung_rx) ** 2
        lung = _soft(_ellipse(size, s * lung_cx, lung_cy, lung_rx, lung_ry), 0.35)
        air.append(lung * np.clip((dome_y - Y) * 12.0, 0.0, 1.0) * (1.0 - heart_a))
    lungs = air[0] + air[1]
    ribs = (0.5 + 0.5 * np.sin((Y + 0.45 * X * X) * 34.0 + rib_phase)) ** 4

    img = 0.06 + 0.5 * _soft(_ellipse(size, 0, 0.2, 0.97 * w, 1.15), 0.25) * (0.85 + 0.3 * tissue)
    img = img + 0.12 * _soft(_ellipse(size, 0, 0.1, 0.07, 1.2), 0.5) + 0.04 * heart_a
    for s in (-1, 1):  # clavicles
        img += 0.08 * _soft(_ellipse(size, s * 0.33 * w, -0.64, 0.33, 0.035, -0.3 * s), 0.6)
    img -= lungs * (0.36 - 0.1 * lung_tex - 0.07 * ribs)

    mask, location = None, None
    if finding == "opacity":
        side = rng.integers(2)
        cx = (2 * side - 1) * lung_cx + rng.uniform(-0.08, 0.08)
        cy = rng.uniform(-0.45, -0.2) if rng.random() < 0.5 else rng.uniform(0.1, 0.3)
        rx = rng.uniform(0.12, 0.24) * d.lesion_scale
        d2 = _ellipse(size, cx, cy, rx, rx * rng.uniform(0.8, 1.3), rng.uniform(0, math.pi))
        a = _soft(d2, 0.7) * air[side] * (0.4 + 0.6 * _smooth(rng, size, 9))
        img += 0.28 * d.contrast * a
        mask = a > 0
        location = f"{_side(mask)} {'upper' if _centroid(mask)[0] < 0 else 'lower'} zone"
    elif finding == "effusion":
        side = rng.integers(2)
        s, h = 2 * side - 1, rng.uniform(0.1, 0.28) * d.lesion_scale
        lateral = np.clip((X - s * lung_cx) * (s / lung_rx), 0.0, 1.0)
        level = dome + 0.03 * s + 0.26 - h - 0.5 * h * lateral**2  # meniscus rises laterally
        a = np.clip((Y - level) * 20.0, 0.0, 1.0) * air[side]
        img += 0.32 * d.contrast * a
        mask = a > 0
        location = _side(mask)
    elif finding == "cardiomegaly":
        mask = heart_d2 < 1
    img += (0.012 * d.noise) * noise
    return img, mask, location


def _ct(anat, rng, finding, size, d):
    w, h = 1.0 + 0.04 * anat.standard_normal(2)
    kidney_y = 0.3 + 0.03 * anat.standard_normal()
    liver_x = -0.4 + 0.03 * anat.standard_normal()
    bowel, liver_tex = _smooth(anat, size, 7), _smooth(anat, size, 10)
    noise = anat.standard_normal((size, size), dtype=np.float32)

    img = np.zeros((size, size), np.float32)
    _paint(img, _soft(_ellipse(size, 0, 0.05, 0.86 * w, 0.62 * h), 0.05), 0.3)  # subcutaneous fat
    _paint(img, _soft(_ellipse(size, 0, 0.06, 0.8 * w, 0.56 * h), 0.08), 0.5)  # muscle wall
    cavity = _soft(_ellipse(size, 0, 0.07, 0.74 * w, 0.51 * h), 0.08)
    _paint(img, cavity, 0.3)
    _paint(img, cavity * np.clip((bowel - 0.45) * 8.0, 0.0, 1.0), 0.5)  # bowel loops
    for s in (-1, 1):
        _paint(img, _soft(_ellipse(size, s * 0.17, 0.47, 0.12, 0.09), 0.2), 0.5)  # paraspinal muscle
    _paint(img, _soft(_ellipse(size, 0, 0.33, 0.11, 0.1), 0.2), 0.92)  # vertebral body
    _paint(img, _soft(_ellipse(size, 0, 0.33, 0.08, 0.07), 0.3), 0.78)
    _paint(img, _soft(_ellipse(size, 0, 0.58, 0.03, 0.09), 0.3), 0.88)  # spinous process
    _paint(img, _soft(_ellipse(size, 0, 0.48, 0.045, 0.04), 0.3), 0.3)  # spinal canal
    _paint(img, _soft(_ellipse(size, 0.06, 0.17, 0.055, 0.055), 0.3), 0.8)  # aorta
    _paint(img, _soft(_ellipse(size, -0.1, 0.17, 0.06, 0.045), 0.3), 0.62)  # IVC
    kidneys = []  # image left (patient right), image right
    for s in (-1, 1):
        k = cavity * _soft(_ellipse(size, s * 0.36, kidney_y, 0.1, 0.15, 0.35 * s), 0.25)
        _paint(img, k, 0.72)
        _paint(img, _soft(_ellipse(size, s * 0.33, kidney_y, 0.04, 0.07, 0.35 * s), 0.4), 0.35)
        kidneys.append(k)
    right_lobe = _soft(_ellipse(size, liver_x, -0.02, 0.36, 0.42, 0.2), 0.15)
    left_lobe = _soft(_ellipse(size, 0.1, -0.26, 0.3, 0.14, 0.15), 0.3)
    liver = cavity * np.maximum(right_lobe, left_lobe)
    _paint(img, liver, 0.58 + 0.08 * liver_tex)
    _paint(img, cavity * _soft(_ellipse(size, 0.57, -0.02, 0.13, 0.22, -0.3), 0.2), 0.58)  # spleen

    mask, location = None, None
    if finding == "liver lesion":
        if rng.random() < 0.7:
            cx, cy, r = liver_x + rng.uniform(-0.15, 0.15), rng.uniform(-0.3, 0.15), rng.uniform(0.05, 0.12)
        else:
            cx, cy, r = rng.uniform(0.08, 0.22), rng.uniform(-0.3, -0.22), rng.uniform(0.04, 0.07)
        r = _min_r(r * d.lesion_scale, size)
        a = _soft(_ellipse(size, cx, cy, r, r * rng.uniform(0.8, 1.2)), 0.5) * liver
        img -= 0.16 * d.contrast * a
        mask = a > 0
        location = f"{_side(mask)} hepatic lobe"
    elif finding == "kidney stone":
        side = rng.integers(2)
        cx = (2 * side - 1) * rng.uniform(0.31, 0.4)
        r = _min_r(rng.uniform(0.025, 0.05) * d.lesion_scale, size)
        a = _soft(_ellipse(size, cx, kidney_y + rng.uniform(-0.07, 0.07), r, r), 0.4) * kidneys[side]
        img += 0.3 * d.contrast * a
        mask = a > 0
        location = f"{_side(mask)} kidney"
    img += (0.035 * d.noise) * noise
    return img, mask, location


def _mri(anat, rng, finding, size, d):
    Y, X = _axes(size)
    rho, theta = _polar(size, 0.0, 0.0)
    w = 1.0 + 0.03 * anat.standard_normal()
    p = anat.uniform(0, 2 * math.pi, 3)
    tex = _smooth(anat, size, 8)
    noise = anat.standard_normal((size, size), dtype=np.float32)

    r = np.sqrt(_ellipse(size, 0, 0, 0.74 * w, 0.9 * w))  # radius in head units
    cortex = 0.72 + 0.035 * np.sin(7 * theta + p[0]) + 0.02 * np.sin(13 * theta + p[1])
    sulci = (np.sin(23 * theta + p[2]) > 0.8) & (r > cortex + 0.04)
    falx = (np.abs(X) < 1.0 / size) & (np.abs(Y) > 0.35)
    img = np.where(r < 1.0, 0.5, 0.0)  # scalp
    img = np.where(r < 0.95, 0.07, img)  # skull
    img = np.where(r < 0.91, 0.15, img)  # CSF
    img = np.where((r < 0.88) & ~sulci & ~falx, 0.62, img)  # grey matter
    img = np.where(r < cortex, 0.48, img)  # white matter
    for s in (-1, 1):  # lateral ventricles
        img = np.where(_ellipse(size, s * 0.09, -0.04, 0.05 * w, 0.2 * w, -0.25 * s) < 1, 0.12, img)
    img = img.astype(np.float32) * (0.94 + 0.12 * tex)

    mask, location = None, None
    if finding != "normal":
        s = 2 * rng.integers(2) - 1
        cands = np.stack([s * rng.uniform(0.2, 0.42, 16), rng.uniform(-0.6, 0.6, 16)], 1)
        inside = (cands[:, 0] / 0.74) ** 2 + (cands[:, 1] / 0.9) ** 2 < 0.55**2
        cx, cy = cands[np.argmax(inside)] if inside.any() else (s * 0.3, 0.0)
        if finding == "focal lesion":
            r = _min_r(rng.uniform(0.025, 0.05) * d.lesion_scale, size)
            a = _soft(_ellipse(size, cx, cy, r, r * rng.uniform(1, 1.6), rng.uniform(0, math.pi)), 0.5)
            img += 0.32 * d.contrast * a
        else:
            r = _min_r(rng.uniform(0.02, 0.035) * d.lesion_scale, size)
            a = _soft(_ellipse(size, cx, cy, r, r), 0.3)
            img -= 0.4 * d.contrast * a
        mask = a > 0
        y = _centroid(mask)[0]
        location = f"{_side(mask)} {'frontal' if y < -0.2 else 'occipital' if y > 0.25 else 'parietal'} lobe"
    img += (0.02 * d.noise) * noise
    return img, mask, location


_APEX = (0.0, -1.05)  # transducer position, just above the image


def _ultrasound(anat, rng, finding, size, d):
    R, T = _polar(size, *_APEX)
    p = anat.uniform(0, 2 * math.pi, 2)
    deep = 1.45 + 0.05 * anat.standard_normal()
    tex = _smooth(anat, size, 6)
    g = anat.standard_normal((2, size // 2, max(size // 4, 2)), dtype=np.float32)
    speckle = np.asarray(Image.fromarray(np.hypot(g[0], g[1]) * (1 / 1.2533)).resize((size, size)))

    sector = _soft((T / 0.7) ** 2, 0.05) * (R > 0.1) * (R < 2.0)
    fascia = 0.36 + 0.03 * np.sin(4 * T + p[0])
    interface = deep + 0.08 * np.sin(3 * T + p[1])
    echo = np.where(R < 0.15, 0.9, np.where(R < fascia, 0.3, 0.55 * (0.75 + 0.5 * tex)))
    echo = np.where(R > interface, 0.4, echo).astype(np.float32)
    echo += 0.6 * np.clip(1 - np.abs(R - fascia) * 30, 0, 1) + 0.7 * np.clip(1 - np.abs(R - interface) * 25, 0, 1)

    mask, location = None, None
    if finding != "normal":
        cy = rng.uniform(-0.5, -0.15) if rng.random() < 0.5 else rng.uniform(0.15, 0.55)
        cx = rng.uniform(-0.4, 0.4) * (cy - _APEX[1])  # keeps the centre within 22 degrees
        if finding == "cyst":
            r = _min_r(rng.uniform(0.08, 0.17) * d.lesion_scale, size)
            a = _soft(_ellipse(size, cx, cy, r, r * rng.uniform(0.8, 1.1)), 0.15)
            rc, tc = math.hypot(cx - _APEX[0], cy - _APEX[1]), math.atan2(cx - _APEX[0], cy - _APEX[1])
            band = np.clip((1 - np.abs(T - tc) * (rc / r)) * 3, 0, 1) * np.clip((R - rc - 0.5 * r) * 20, 0, 1)
            echo *= np.clip(1 - 0.92 * d.contrast * a, 0, None) * (1 + 0.35 * d.contrast * band * (1 - a))
        else:
            r = _min_r(rng.uniform(0.08, 0.15) * d.lesion_scale, size)
            Y, X = _axes(size)
            dx, dy = X - cx, Y - cy
            phi, q = np.arctan2(dy, dx), rng.uniform(0, 2 * math.pi, 3)
            edge = r * (1 + 0.15 * np.sin(3 * phi + q[0]) + 0.08 * np.sin(5 * phi + q[1]) + 0.05 * np.sin(9 * phi + q[2]))
            a = _soft((dx * dx + dy * dy) / (edge * edge), 0.4)
            echo *= 1 - 0.5 * d.contrast * a * (0.8 + 0.4 * _smooth(rng, size, 5))
        mask = (a > 0) & (sector > 0)
        location = "superficial" if _centroid(mask)[0] < 0 else "deep"
    gain = 1.15 - 0.3 * R
    return sector * echo * gain * np.clip(1 + d.noise * (speckle - 1), 0, None), mask, location


_RENDER = {"xray": _xray, "ct": _ct, "mri": _mri, "ultrasound": _ultrasound}

# ----------------------------------------------------------------------------- reports
# Templates: {size} size adjective, {mm} equivalent diameter, {loc} location. Sentences are
# capitalised after filling.

_TECHNIQUE = {
    "xray": ("PA chest radiograph.", "Frontal chest radiograph.", "AP portable chest X-ray.", "Chest X-ray, PA view."),
    "ct": ("Axial contrast-enhanced CT of the abdomen.", "Contrast-enhanced abdominal CT.", "Axial CT through the upper abdomen."),
    "mri": ("Axial T2 FLAIR MRI of the brain.", "Brain MRI, axial FLAIR.", "Axial T2-weighted brain MRI."),
    "ultrasound": ("Sonographic images.", "Grayscale ultrasound images.", "Targeted ultrasound of the area of concern."),
}
_POSITIVE = {
    "opacity": ("{size} patchy opacity in the {loc}.", "there is a {size} airspace opacity in the {loc}.",
                "{size} opacity in the {loc}, possibly consolidation.", "{size} ill-defined opacity projecting over the {loc}."),
    "effusion": ("{size} {loc} pleural effusion.", "there is a {size} {loc}-sided pleural effusion.",
                 "blunting of the {loc} costophrenic angle from a {size} pleural effusion.", "{loc} pleural effusion, {size} in size."),
    "cardiomegaly": ("{size} cardiomegaly.", "the cardiac silhouette is enlarged, {size} cardiomegaly.",
                     "enlarged heart in keeping with {size} cardiomegaly."),
    "liver lesion": ("{size} hypodense liver lesion in the {loc}.", "a {mm} mm hypodense liver lesion in the {loc}.",
                     "there is a {size} low-attenuation liver lesion in the {loc}.", "hypodense liver lesion in the {loc}, measuring {mm} mm."),
    "kidney stone": ("{size} kidney stone in the {loc}.", "a {mm} mm nonobstructing kidney stone in the {loc}.",
                     "dense {size} kidney stone within the {loc}.", "kidney stone in the {loc} measuring {mm} mm."),
    "focal lesion": ("{size} hyperintense focal lesion in the {loc}.", "a {mm} mm FLAIR hyperintense focal lesion in the {loc}.",
                     "there is a {size} T2 hyperintense focal lesion in the {loc}.", "hyperintense focal lesion in the {loc}, {mm} mm."),
    "microbleed": ("{size} hypointense microbleed in the {loc}.", "a {mm} mm microbleed in the {loc}.",
                   "there is a {size} focus of signal loss in the {loc}, consistent with a microbleed.", "punctate microbleed in the {loc}, {mm} mm."),
    "cyst": ("{size} {loc} anechoic cyst with posterior acoustic enhancement.", "a {mm} mm {loc} simple cyst, anechoic with posterior enhancement.",
             "there is a {size} anechoic cyst in the {loc} field.", "{loc} anechoic cyst measuring {mm} mm."),
    "solid nodule": ("{size} {loc} hypoechoic solid nodule with irregular margins.", "a {mm} mm hypoechoic solid nodule in the {loc} field.",
                     "there is a {size} {loc} solid nodule, hypoechoic and ill-defined.", "{loc} hypoechoic solid nodule measuring {mm} mm."),
}
_NEGATIVE = {
    "opacity": ("The lungs are clear.", "No focal opacity.", "No consolidation or opacity."),
    "effusion": ("No pleural effusion.", "No effusion.", "Costophrenic angles are sharp."),
    "cardiomegaly": ("Heart size is normal.", "No cardiomegaly.", "Normal cardiac silhouette."),
    "liver lesion": ("No focal liver lesion.", "The liver is unremarkable.", "Homogeneous liver without focal lesion."),
    "kidney stone": ("No kidney stone.", "No kidney stone or hydronephrosis.", "Kidneys are unremarkable."),
    "focal lesion": ("No focal lesion.", "No abnormal hyperintense focal lesion.", "No FLAIR signal abnormality."),
    "microbleed": ("No microbleed.", "No evidence of microbleed.", "No susceptibility artifact to suggest microbleed."),
    "cyst": ("No cyst.", "No cystic lesion.", "No anechoic collection."),
    "solid nodule": ("No solid nodule.", "No focal solid nodule.", "No hypoechoic mass."),
}
_NORMAL = {
    "xray": ("No pneumothorax.", "Mediastinal contours are normal.", "No acute osseous abnormality.",
             "No acute cardiopulmonary process."),
    "ct": ("The spleen is normal.", "No free fluid.", "No lymphadenopathy.", "No acute abdominal abnormality."),
    "mri": ("Ventricles are normal in size.", "No mass effect or midline shift.", "Grey-white differentiation is preserved.",
            "No acute intracranial abnormality."),
    "ultrasound": ("Homogeneous echotexture.", "No free fluid.", "Normal echogenicity.", "Unremarkable sonographic appearance."),
}
_SEVERITY = {"small": "mild", "moderate": "moderate", "large": "marked"}  # cardiomegaly wording


def _pick(rng, options):
    return options[rng.integers(len(options))]


def _sentence(text):
    return text[0].upper() + text[1:]


def _report(rng, modality, finding, location, size_word, mm):
    absent = [f for f in FINDINGS[modality][1:] if f != finding]
    body = [_pick(rng, _NEGATIVE[f]) for f in absent if rng.random() < 0.75] or [_pick(rng, _NEGATIVE[absent[0]])]
    body += [s for s in _NORMAL[modality] if rng.random() < 0.3]
    rng.shuffle(body)
    if finding != "normal":
        size = _SEVERITY[size_word] if finding == "cardiomegaly" else size_word
        first = _sentence(_pick(rng, _POSITIVE[finding]).format(size=size, mm=mm, loc=location))
        body.insert(0 if rng.random() < 0.6 else rng.integers(len(body) + 1), first)
    parts = ([_pick(rng, _TECHNIQUE[modality])] if rng.random() < 0.5 else []) + body
    while len(" ".join(parts).split()) > 30:  # text encoder budget: drop a filler sentence
        parts.remove(next(s for s in reversed(parts) if finding == "normal" or finding not in s.lower()))
    while len(" ".join(parts).split()) < 8:
        parts.append(_pick(rng, [s for s in _NORMAL[modality] if s not in parts]))
    return " ".join(parts)


# ----------------------------------------------------------------------------- public API


def render_sample(rng: np.random.Generator, modality: str, finding: str, size: int = 96,
                  difficulty: Difficulty = Difficulty()) -> Sample:
    """Render one image, its finding mask and a matching report."""
    if finding not in FINDINGS[modality]:
        raise ValueError(f"unknown finding {finding!r} for {modality}; choose from {FINDINGS[modality]}")
    anat = np.random.default_rng(rng.integers(1 << 63))
    img, mask, location = _RENDER[modality](anat, rng, finding, size, difficulty)
    image = (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    size_word, mm = None, None
    if mask is not None:
        mm = round(2 * math.sqrt(mask.sum() / math.pi) * _FOV_MM[modality] / size)
        small, large = _SIZE_MM[finding]
        size_word = "small" if mm < small else "moderate" if mm < large else "large"
    return Sample(image, mask, _report(rng, modality, finding, location, size_word, mm), location, size_word)


def _draw(rng):
    u = rng.random()
    split = next(name for name, p in SPLITS if u < p)
    modality = MODALITIES[rng.integers(len(MODALITIES))]
    findings = FINDINGS[modality]
    finding = findings[0] if rng.random() < P_NORMAL else findings[1 + rng.integers(len(findings) - 1)]
    return split, modality, finding


def generate(out_dir, n: int, seed: int = 0, size: int = 96, difficulty: Difficulty = Difficulty(),
             progress: bool = True) -> pathlib.Path:
    """Write n samples as images/NNNNNN.png, masks/NNNNNN.png (abnormal only) and manifest.jsonl."""
    out = pathlib.Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="MedSynth", unit="img")
    manifest = out / "manifest.jsonl"
    with open(manifest, "w") as f:
        for i in indices:
            rng = np.random.default_rng([seed, i])
            split, modality, finding = _draw(rng)
            s = render_sample(rng, modality, finding, size, difficulty)
            name = f"{i:06d}.png"
            Image.fromarray(s.image).save(out / "images" / name, compress_level=1)
            if s.mask is not None:
                Image.fromarray(s.mask.view(np.uint8) * np.uint8(255)).save(out / "masks" / name, compress_level=1)
            row = {"image": f"images/{name}", "report": s.report, "modality": modality, "split": split,
                   "finding": finding, "labels": [finding], "mask": f"masks/{name}" if s.mask is not None else None,
                   "location": s.location, "size": s.size_word}
            f.write(json.dumps(row) + "\n")
    return manifest
