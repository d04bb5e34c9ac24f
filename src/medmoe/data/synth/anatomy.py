"""MedSynth anatomy: the drawing primitives and each modality's bank of anatomy variants.

Coordinates are normalised to [-1, 1] over the image. Shapes are evaluated on their bounding box only
and passed around as (array, box) pairs, where box is a (row slice, column slice) of the image, or ...
for the whole image. Anatomy comes from a fixed bank of _VARIANTS per modality, each rendered once per
image size and cached (read-only); texture, noise and the finding are drawn per sample (findings.py).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


# ----------------------------------------------------------------------------- drawing primitives


def _frozen(*arrays):
    """Mark cached arrays read-only, so no renderer can modify a shared one in place."""
    for a in arrays:
        a.flags.writeable = False
    return arrays


@lru_cache(maxsize=8)
def _axes(size):
    """Pixel-centre coordinates in [-1, 1]: Y as a column [S, 1], X as a row [1, S]."""
    c = (np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0
    return _frozen(c[:, None].copy(), c[None, :].copy())


@lru_cache(maxsize=8)
def _polar(size, cx, cy, bins=256):
    """Radius, angle (0 = straight down) and angle bin (0..bins-1) of every pixel around (cx, cy)."""
    Y, X = _axes(size)
    radius, angle = np.hypot(X - cx, Y - cy), np.arctan2(X - cx, Y - cy)
    return _frozen(radius, angle, ((angle / (2 * math.pi) + 0.5) * bins).astype(np.intp) % bins)


_PHI = np.linspace(-math.pi, math.pi, 256, endpoint=False, dtype=np.float32)  # angle of each bin


@lru_cache(maxsize=32)
def _upsampler(n_out, n_in):
    """[n_out, n_in] Gaussian interpolation weights: smooth upsampling as a matrix product."""
    u = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    w = np.exp(-2.0 * (u[:, None] - np.arange(n_in)[None, :]) ** 2)
    return _frozen((w / w.sum(1, keepdims=True)).astype(np.float32))[0]


def _matmul(a, b):
    """a @ b in row blocks small enough (m * n * k < 2**17) that BLAS stays single-threaded: waking its
    threads costs far more than these small products, the more so on a busy machine."""
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    step = max(1, 2**17 // (a.shape[1] * b.shape[1]))
    for r in range(0, a.shape[0], step):
        np.matmul(a[r:r + step], b, out=out[r:r + step])
    return out


def _upsample(grid, size):
    return _matmul(_upsampler(size, grid.shape[0]), _matmul(grid, _upsampler(size, grid.shape[1]).T))


def _smooth(rng, size, cells):
    """Low-frequency texture around 0.5: a random cells x cells grid, smoothly upsampled."""
    return _upsample(rng.random((cells, cells), dtype=np.float32), size)


def _pixels(rng):
    """Child generator for per-pixel draws: rng advances by one draw whatever the image size, so a
    seed renders the same layout and findings at every size."""
    return np.random.default_rng(rng.integers(1 << 63))


def _noise(rng, size):
    """Zero-mean, unit-variance pixel noise (uniform: 4x cheaper to draw than Gaussian, looks alike)."""
    return (_pixels(rng).random((size, size), dtype=np.float32) - 0.5) * 3.4641


def _speckle(rng, size):
    """Multiplicative ultrasound speckle with mean ~1: Rayleigh amplitudes on a coarse grid (grain
    elongated laterally), smoothly upsampled."""
    g = _pixels(rng).standard_normal((2, size // 2, size // 4), dtype=np.float32)
    return _upsample(np.hypot(g[0], g[1]), size) * 0.8


def _clamp(x, lo=0.0, hi=1.0):
    """Clip a temporary array in place (np.clip's Python wrapper costs more than the work here)."""
    np.maximum(x, lo, out=x)
    return np.minimum(x, hi, out=x)


def _span(size, c, h):
    """Slice of the pixel rows (or columns) whose centres may lie within c +- h."""
    f = size / 2
    return slice(min(max(int((c - h + 1) * f), 0), size), min(max(int((c + h + 1) * f) + 1, 0), size))


def _box(size, cx, cy, hx, hy):
    """Row and column slices covering the pixels within cx +- hx, cy +- hy."""
    return _span(size, cy, hy), _span(size, cx, hx)


def _inside(size, cx, cy, rx, ry, angle=0.0, scale=1.0):
    """scale * (1 - d2) on the bounding box of an ellipse, d2 being the squared normalised distance
    from its centre: positive inside, 0 on the rim. Evaluated as a quadratic form (few full-size ops)."""
    c, s = math.cos(angle), math.sin(angle)
    box = _box(size, cx, cy, math.hypot(rx * c, ry * s), math.hypot(rx * s, ry * c))
    Y, X = _axes(size)
    dx, dy = X[:, box[1]] - cx, Y[box[0]] - cy
    kx, ky = scale * ((c / rx) ** 2 + (s / ry) ** 2), scale * ((s / rx) ** 2 + (c / ry) ** 2)
    out = (scale - ky * dy * dy) - kx * dx * dx
    if angle:
        out -= (2 * scale * c * s * (rx**-2 - ry**-2) * dy) * dx
    return out, box


def _blob(size, cx, cy, rx, ry, angle=0.0, edge=0.3):
    """Soft ellipse (alpha, box): 1 in the middle, ramping to exactly 0 at the rim (d2 from 1 - edge to 1)."""
    t, box = _inside(size, cx, cy, rx, ry, angle, 1.0 / edge)
    return _clamp(t), box


def _full(size, window, box):
    out = np.zeros((size, size), window.dtype)
    out[box] = window
    return out


def _paint(img, alpha, box, value):
    """Alpha-blend `value` into img over the box (... for the whole image)."""
    view = img[box]
    view += alpha * (value - view)


# ----------------------------------------------------------------------------- anatomy

_VARIANTS = 64


def _chest(size, variant, enlarge=1.0):
    """Chest radiograph anatomy: (base image, aerated-lung alpha, darkening by that air, heart alpha,
    geometry). `enlarge` scales the heart (cardiomegaly)."""
    rng = np.random.default_rng([0, variant])
    Y, X = _axes(size)
    w = 1.0 + 0.05 * rng.standard_normal()
    lung = (0.4 * w, -0.06, 0.3 * w, 0.63)  # centre x (mirrored), centre y, radii
    heart = (0.14 + 0.03 * rng.standard_normal(), 0.24, 0.28 * w, 0.24)
    dome = 0.38 + 0.03 * rng.standard_normal()  # top of the hemidiaphragms; the angles are 0.2 lower
    rib_phase = rng.uniform(0, 2 * math.pi)
    f = enlarge - 1
    heart = (heart[0] + 0.06 * f, heart[1] + 0.05 * f, heart[2] * enlarge, heart[3] * enlarge**0.6)

    img = np.full((size, size), 0.05, np.float32)
    body, box = _blob(size, 0, 0.25, 1.02 * w, 1.2, edge=0.15)
    img[box] += 0.51 * body
    spine, box = _blob(size, 0, 0.1, 0.07, 1.2, edge=0.6)
    img[box] += 0.06 * spine
    for s in (-1, 1):  # clavicles
        clavicle, box = _blob(size, s * 0.3 * w, -0.66, 0.3, 0.035, -0.25 * s, edge=0.6)
        img[box] += 0.06 * clavicle
    heart_a = _full(size, *_blob(size, *heart, edge=0.25))
    img += 0.06 * heart_a
    air, dark = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
    for s in (-1, 1):
        a, box = _blob(size, s * lung[0], lung[1], lung[2], lung[3], edge=0.15)
        y, x = Y[box[0]], X[:, box[1]]
        a *= _clamp((dome + 0.03 * s - y) * 25.0 + (-5.0 / lung[2] ** 2) * (x - s * lung[0]) ** 2)  # diaphragm
        a -= heart_a[box] * a
        ribs = np.sin((y * 30.0 + rib_phase) - (10.5 * x) * x)
        air[box] += a
        dark[box] += a * (0.32 - 0.012 * (1 + ribs) ** 2)
    img -= dark
    return _frozen(img, air, dark, heart_a) + ((lung, heart, dome),)


_normal_chest = lru_cache(maxsize=2 * _VARIANTS)(_chest)


@lru_cache(maxsize=2 * _VARIANTS)
def _abdomen(size, variant):
    """Abdominal CT anatomy: (base image, liver alpha, kidney alpha (both), geometry)."""
    rng = np.random.default_rng([1, variant])
    w, h = 1.0 + 0.04 * rng.standard_normal(), 1.0 + 0.04 * rng.standard_normal()
    kidney_y = 0.32 + 0.03 * rng.standard_normal()
    liver_x = -0.4 + 0.03 * rng.standard_normal()
    bowel, liver_tex = _smooth(rng, size, 7), _smooth(rng, size, 10)

    img = np.zeros((size, size), np.float32)
    _paint(img, *_blob(size, 0, 0.04, 0.92 * w, 0.68 * h, edge=0.05), 0.3)  # subcutaneous fat
    _paint(img, *_blob(size, 0, 0.05, 0.85 * w, 0.61 * h, edge=0.08), 0.5)  # abdominal wall
    cavity = _full(size, *_blob(size, 0, 0.06, 0.79 * w, 0.56 * h, edge=0.08))
    _paint(img, cavity, ..., 0.3)
    _paint(img, cavity * _clamp((bowel - 0.45) * 8.0), ..., 0.5)  # bowel loops
    liver = np.maximum(_full(size, *_blob(size, liver_x, -0.08, 0.37, 0.38, 0.2, edge=0.15)),
                       _full(size, *_blob(size, 0.1, -0.3, 0.32, 0.14, 0.15, edge=0.3)))
    liver *= cavity
    _paint(img, liver, ..., 0.58 + 0.08 * liver_tex)
    spleen, box = _blob(size, 0.6, -0.04, 0.13, 0.24, -0.3, edge=0.2)
    _paint(img, spleen * cavity[box], box, 0.58)
    for shape, value in [((-0.18, 0.5, 0.13, 0.1), 0.5), ((0.18, 0.5, 0.13, 0.1), 0.5),  # paraspinal muscles
                         ((0, 0.35, 0.12, 0.11), 0.92), ((0, 0.35, 0.09, 0.08), 0.78),  # vertebral body
                         ((0, 0.6, 0.03, 0.09), 0.88), ((0, 0.5, 0.045, 0.04), 0.3),  # spinous process, canal
                         ((0.07, 0.18, 0.06, 0.06), 0.8), ((-0.1, 0.18, 0.065, 0.05), 0.62)]:  # aorta, IVC
        _paint(img, *_blob(size, *shape, edge=0.25), value)
    kidneys = np.zeros((size, size), np.float32)
    for s in (-1, 1):
        kidney, box = _blob(size, s * 0.38, kidney_y, 0.11, 0.16, 0.35 * s, edge=0.25)
        kidney *= cavity[box]
        _paint(img, kidney, box, 0.72)
        _paint(img, *_blob(size, s * 0.345, kidney_y, 0.04, 0.075, 0.35 * s, edge=0.4), 0.35)  # sinus fat
        kidneys[box] = np.maximum(kidneys[box], kidney)
    return _frozen(img, liver, kidneys) + ((liver_x, kidney_y, 0.79 * w, 0.56 * h),)


def _mri_radial(n=1024):
    """Intensity by squared head radius (n bins over [0, 1]): grey matter, CSF, skull, scalp, air."""
    r = np.sqrt((np.arange(n + 1) + 0.5) / n)
    return np.select([r < 0.88, r < 0.91, r < 0.95, r < 1.0], [0.64, 0.15, 0.07, 0.5], 0.0).astype(np.float32)


_MRI_RADIAL = _mri_radial()


@lru_cache(maxsize=2 * _VARIANTS)
def _brain(size, variant):
    """Axial FLAIR-like brain slice: scalp, skull, CSF, folded cortex, white matter, ventricles."""
    rng = np.random.default_rng([2, variant])
    Y, X = _axes(size)
    _, _, bins = _polar(size, 0.0, 0.0)
    w = 1.0 + 0.03 * rng.standard_normal()
    p = rng.uniform(0, 2 * math.pi, 2).tolist()
    gyri = _matmul(_upsampler(256, 12), rng.random((12, 1), dtype=np.float32))[:, 0]  # smooth profile over angle

    folds = np.sin(21 * _PHI + 2 * np.sin(3 * _PHI + p[0]) + p[1])  # gyri at +1, sulci at -1
    cortex = 0.72 + 0.08 * gyri + 0.05 * folds  # grey-white boundary radius per angle
    cleft = np.where(folds < -0.8, (cortex + 0.015) ** 2, np.inf)  # sulci reach down to the white matter
    cleft[np.abs(np.sin(_PHI)) < 0.025] = 0.3**2  # interhemispheric fissure
    r2 = (X * X) * (0.74 * w) ** -2 + (Y * Y) * (0.9 * w) ** -2  # squared radius in head units
    n = len(_MRI_RADIAL) - 1
    img = _MRI_RADIAL[np.minimum(r2 * n, n).astype(np.intp)]
    img[r2 < (cortex**2)[bins]] = 0.46  # white matter
    img[(r2 > cleft[bins]) & (r2 < 0.88**2)] = 0.15  # CSF in sulci
    for s in (-1, 1):  # lateral ventricles
        t, box = _inside(size, s * 0.09, -0.04, 0.05 * w, 0.2 * w, -0.25 * s)
        img[box][t > 0] = 0.12
    return _frozen(img)[0]


_APEX = (0.0, -1.05)  # ultrasound transducer, just above the image


@lru_cache(maxsize=8)
def _sector(size):
    """Fixed fan: sector alpha times depth gain (brighter near field)."""
    R, T, _ = _polar(size, *_APEX)
    return _frozen((_clamp((1 - (T / 0.7) ** 2) * 20) * (R < 2.0) * (1.15 - 0.3 * R)).astype(np.float32))[0]


@lru_cache(maxsize=2 * _VARIANTS)
def _layers(size, variant):
    """Sonographic layers without speckle: (echo, parenchyma alpha): subcutaneous fat, fascia,
    parenchyma, a deep interface and a deeper layer, all following arcs around the transducer."""
    rng = np.random.default_rng([3, variant])
    R, _, bins = _polar(size, *_APEX)
    p = rng.uniform(0, 2 * math.pi, 2).tolist()
    deep = 1.45 + 0.05 * rng.standard_normal()
    fascia = (0.36 + 0.03 * np.sin(4 * _PHI + p[0]))[bins]
    interface = (deep + 0.08 * np.sin(3 * _PHI + p[1]))[bins]
    parenchyma = ((R >= fascia) & (R <= interface)).astype(np.float32)
    echo = np.where(R < fascia, 0.3, np.where(R > interface, 0.4, 0.55)).astype(np.float32)
    echo += _clamp(0.6 - 18 * np.abs(fascia - R)) + _clamp(0.7 - 17.5 * np.abs(interface - R))  # bright echoes
    return _frozen(echo, parenchyma)
