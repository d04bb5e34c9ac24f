"""MedSynth findings: each modality's renderer draws texture, noise and the finding onto its anatomy;
the finding's mask gives its location and size words.

Each renderer takes (rng, finding, size, difficulty, frng): it draws the variant, textures and noise from
``rng`` first, then the finding from ``frng`` (the same generator in MedSynth proper, so the draws follow
one stream; a generator of its own in the grounding sanity set, whose background is fixed), and returns
(float image ~[0, 1], bool mask or None, location or None).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .anatomy import (_APEX, _VARIANTS, _abdomen, _axes, _blob, _box, _brain, _chest, _clamp, _full, _layers, _noise,
                      _normal_chest, _polar, _sector, _smooth, _speckle)


MODALITIES: tuple[str, ...] = ("xray", "ct", "mri", "ultrasound")
FINDINGS: dict[str, tuple[str, ...]] = {
    "xray": ("normal", "opacity", "cardiomegaly", "effusion"),
    "ct": ("normal", "liver lesion", "kidney stone"),
    "mri": ("normal", "focal lesion", "microbleed"),
    "ultrasound": ("normal", "cyst", "solid nodule"),
}
_FOV_MM = {"xray": 400.0, "ct": 380.0, "mri": 240.0, "ultrasound": 100.0}
_SIZE_MM = {  # rounded equivalent diameter (mm): small < a <= moderate < b <= large (tertiles at Difficulty())
    "opacity": (108, 124),
    "effusion": (76, 105),
    "cardiomegaly": (138, 152),
    "liver lesion": (42, 56),
    "kidney stone": (23, 29),
    "focal lesion": (17, 22),
    "microbleed": (12, 14),
    "cyst": (20, 24),
    "solid nodule": (19, 23),
}


@dataclass(frozen=True)
class Difficulty:
    """Multipliers on the built-in finding appearance. The defaults (contrast 2.5, lesion_scale 1.8) were
    chosen by measurement: after the demo's budget (`small`, 240 steps) zero-shot finding classification is
    above chance (macro AUC 0.60, ultrasound 0.75) and far from perfect; at 1.0/1.0 it stayed at chance.

    noise: pixel noise (xray, ct, mri) or speckle depth (ultrasound); 0 gives clean images.
    contrast: finding intensity against its background; 0 makes findings invisible (cardiomegaly, a
        shape change, ignores it).
    lesion_scale: finding radii (cardiomegaly: the enlargement); size words follow the actual mask.
    """

    noise: float = 1.0
    contrast: float = 2.5
    lesion_scale: float = 1.8

    def __post_init__(self):
        if min(self.noise, self.contrast, self.lesion_scale) < 0:
            raise ValueError(f"Difficulty values must be >= 0, got {self}")


def _min_r(r, size):
    """Keep a radius at least 1.1 px: with axis ratios >= 0.72, every finding then contains a disc of
    radius 0.75 px and so at least one pixel centre."""
    return max(r, 2.2 / size)


def _centroid(mask):
    """(y, x) of the mask centroid in [-1, 1] image coordinates."""
    ys, xs = np.nonzero(mask)
    return (ys.mean() + 0.5) * 2 / mask.shape[0] - 1, (xs.mean() + 0.5) * 2 / mask.shape[1] - 1


def _side(x):
    """Radiological convention: the image left (x < 0) is the patient's right."""
    return "right" if x < 0 else "left"


def _xray(rng, finding, size, d, frng):
    variant = int(rng.integers(_VARIANTS))
    tissue, lung_tex, noise = _smooth(rng, size, 5), _smooth(rng, size, 12), _noise(rng, size)
    enlarge = 1.0 + frng.uniform(0.15, 0.45) * d.lesion_scale if finding == "cardiomegaly" else 1.0
    chest = _chest if enlarge != 1.0 else _normal_chest  # only cardiomegaly changes the cached anatomy
    base, air, dark, heart_a, (lung, heart, dome) = chest(size, variant, enlarge)
    aeration = air * (0.16 * lung_tex - 0.08)  # patchy lungs: the air darkening varies by +-0.08
    img = base * (0.85 + 0.3 * tissue)
    img += aeration

    mask, location = None, None
    if finding == "opacity":
        s = 2 * int(frng.integers(2)) - 1
        xs = s * lung[0] + frng.uniform(-0.15, 0.15, 8)
        ys = frng.uniform(-0.45, -0.2, 8) if frng.random() < 0.5 else frng.uniform(0.05, 0.3, 8)
        lx, ly = (xs - s * lung[0]) / lung[2], (ys - lung[1]) / lung[3]
        hx, hy = (xs - heart[0]) / heart[2], (ys - heart[1]) / heart[3]
        aerated = (lx * lx + ly * ly < 0.6) & (hx * hx + hy * hy > 1.3) & (ys < dome + 0.2 * lx * lx - 0.05)
        k = int(np.argmax(aerated))  # first candidate well inside the aerated lung
        cx, cy = (float(xs[k]), float(ys[k])) if aerated[k] else (s * lung[0], -0.3)
        rx = _min_r(frng.uniform(0.14, 0.26) * d.lesion_scale, size)
        a, box = _blob(size, cx, cy, rx, rx * frng.uniform(0.8, 1.3), frng.uniform(0, math.pi), edge=1.0)
        a *= (dark[box] - aeration[box]) * _clamp(0.2 + 1.6 * _smooth(frng, size, 10)[box])
        img[box] += (0.8 * d.contrast) * a  # consolidation replaces most of the air
        mask = _full(size, a > 0, box)
        y, x = _centroid(mask)
        location = f"{_side(x)} {'upper' if y < 0 else 'lower'} zone"
    elif finding == "effusion":
        s = 2 * int(frng.integers(2)) - 1
        h = max(frng.uniform(0.1, 0.38) * d.lesion_scale, 0.1 + 2 / size)  # at least a blunted angle
        Y, X = _axes(size)
        box = (slice(None), slice(size // 2, None) if s > 0 else slice(0, size // 2))  # that lung's half
        lateral = _clamp((X[:, box[1]] - s * lung[0]) * (s / lung[2]))
        level = dome + 0.03 * s + 0.06 - h * (1 + 0.5 * lateral**2)  # meniscus rises laterally
        a = _clamp((Y - level) * 30.0) * (dark[box] - aeration[box])
        img[box] += d.contrast * a  # fluid replaces the air
        mask, location = _full(size, a > 0, box), _side(s)
    elif finding == "cardiomegaly":
        mask = heart_a > 0
    img += (0.012 * d.noise) * noise
    return img, mask, location


def _ct(rng, finding, size, d, frng):
    base, liver, kidneys, (liver_x, kidney_y, cavity_rx, cavity_ry) = _abdomen(size, int(rng.integers(_VARIANTS)))
    tex, noise = _smooth(rng, size, 9), _noise(rng, size)
    img = base * (0.94 + 0.12 * tex)

    mask, location = None, None
    if finding == "liver lesion":
        if frng.random() < 0.7:  # right lobe, else the smaller left lobe
            xs, ys, r = liver_x + frng.uniform(-0.15, 0.15, 8), frng.uniform(-0.3, 0.05, 8), frng.uniform(0.05, 0.12)
        else:
            xs, ys, r = frng.uniform(0.08, 0.22, 8), frng.uniform(-0.34, -0.26, 8), frng.uniform(0.04, 0.07)
        clear = (xs / cavity_rx) ** 2 + ((ys - 0.06) / cavity_ry) ** 2 < 0.8  # away from the abdominal wall
        k = int(np.argmax(clear))
        cx, cy = (float(xs[k]), float(ys[k])) if clear[k] else (liver_x + 0.05, -0.1)
        r = _min_r(r * d.lesion_scale, size)
        a, box = _blob(size, cx, cy, r, r * frng.uniform(0.8, 1.2), edge=0.5)
        a *= liver[box]
        img[box] -= (0.16 * d.contrast) * a
        mask = _full(size, a > 0, box)
        location = f"{_side(_centroid(mask)[1])} hepatic lobe"
    elif finding == "kidney stone":
        s = 2 * int(frng.integers(2)) - 1
        cx, cy = s * frng.uniform(0.33, 0.42), kidney_y + frng.uniform(-0.07, 0.07)
        r = _min_r(frng.uniform(0.025, 0.05) * d.lesion_scale, size)
        a, box = _blob(size, cx, cy, r, r, edge=0.4)
        a *= kidneys[box]
        img[box] += (0.3 * d.contrast) * a
        mask = _full(size, a > 0, box)
        location = f"{_side(_centroid(mask)[1])} kidney"
    img += (0.035 * d.noise) * noise
    return img, mask, location


def _mri(rng, finding, size, d, frng):
    base = _brain(size, int(rng.integers(_VARIANTS)))
    tex, noise = _smooth(rng, size, 8), _noise(rng, size)
    img = base * (0.94 + 0.12 * tex)

    mask, location = None, None
    if finding != "normal":
        s = 2 * int(frng.integers(2)) - 1
        xs, ys = s * frng.uniform(0.2, 0.42, 16), frng.uniform(-0.6, 0.6, 16)
        deep = (xs / 0.74) ** 2 + (ys / 0.9) ** 2 < 0.55**2  # deep white matter, clear of the cortex
        k = int(np.argmax(deep))
        cx, cy = (float(xs[k]), float(ys[k])) if deep[k] else (s * 0.3, 0.0)
        if finding == "focal lesion":
            r = _min_r(frng.uniform(0.025, 0.05) * d.lesion_scale, size)
            a, box = _blob(size, cx, cy, r, r * frng.uniform(1, 1.6), frng.uniform(0, math.pi), edge=0.5)
            img[box] += (0.32 * d.contrast) * a
        else:
            r = _min_r(frng.uniform(0.02, 0.035) * d.lesion_scale, size)
            a, box = _blob(size, cx, cy, r, r, edge=0.3)
            img[box] -= (0.4 * d.contrast) * a
        mask = _full(size, a > 0, box)
        y, x = _centroid(mask)
        location = f"{_side(x)} {'frontal' if y < -0.2 else 'occipital' if y > 0.25 else 'parietal'} lobe"
    img += (0.02 * d.noise) * noise
    return img, mask, location


def _ultrasound(rng, finding, size, d, frng):
    base, parenchyma = _layers(size, int(rng.integers(_VARIANTS)))
    tex, speckle = _smooth(rng, size, 6), _speckle(rng, size)
    echo = base + parenchyma * (0.28 * tex - 0.14)

    mask, location = None, None
    if finding != "normal":
        cy = frng.uniform(-0.5, -0.15) if frng.random() < 0.5 else frng.uniform(0.15, 0.55)
        cx = frng.uniform(-0.4, 0.4) * (cy - _APEX[1])  # within 22 degrees of the beam axis
        if finding == "cyst":
            r = _min_r(frng.uniform(0.08, 0.17) * d.lesion_scale, size)
            a, box = _blob(size, cx, cy, r, r * frng.uniform(0.8, 1.1), edge=0.15)
            echo[box] *= _clamp(1 - (0.92 * d.contrast) * a)  # anechoic
            R, T, _ = _polar(size, *_APEX)
            rc, tc = math.hypot(cx - _APEX[0], cy - _APEX[1]), math.atan2(cx - _APEX[0], cy - _APEX[1])
            behind = (slice(box[0].start, size), slice(None))  # posterior acoustic enhancement
            band = _clamp((1 - np.abs(T[behind] - tc) * (rc / r)) * 3) * _clamp((R[behind] - rc - 0.5 * r) * 20)
            echo[behind] *= 1 + (0.35 * d.contrast) * band
        else:
            r = _min_r(frng.uniform(0.08, 0.15) * d.lesion_scale, size)
            Y, X = _axes(size)
            box = _box(size, cx, cy, 1.4 * r, 1.4 * r)  # around the lobulated outline
            dx, dy = X[:, box[1]] - cx, Y[box[0]] - cy
            phi, q = np.arctan2(dy, dx), frng.uniform(0, 2 * math.pi, 3).tolist()
            edge = r * (1 + 0.15 * np.sin(3 * phi + q[0]) + 0.08 * np.sin(5 * phi + q[1])
                        + 0.05 * np.sin(9 * phi + q[2]))
            a = _clamp((1 - (dx * dx + dy * dy) / (edge * edge)) * 2.5)
            echo[box] *= 1 - (0.5 * d.contrast) * a * (0.6 + 0.8 * _smooth(frng, size, 5)[box])  # hypoechoic
        mask = _full(size, (a > 0) & (_sector(size)[box] > 0), box)
        location = "superficial" if _centroid(mask)[0] < 0 else "deep"
    echo *= _sector(size)
    echo *= _clamp(1 + (0.9 * d.noise) * (speckle - 1), 0, np.inf)
    return echo, mask, location


_RENDER = {"xray": _xray, "ct": _ct, "mri": _mri, "ultrasound": _ultrasound}


def _measure(modality, finding, mask):
    """(size word, rounded equivalent-circle diameter in mm) of a finding mask."""
    mm = round(2 * math.sqrt(mask.sum() / math.pi) * _FOV_MM[modality] / mask.shape[0])
    small, large = _SIZE_MM[finding]
    return "small" if mm < small else "moderate" if mm < large else "large", mm
