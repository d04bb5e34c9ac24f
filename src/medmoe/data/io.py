"""``load_image(path)``: any supported medical image file -> float32 array in [0, 1], shape [H, W].

The format is recognised by content, not by extension (torchxrayvision style): DICOM by its
``DICM`` magic at byte 128, everything else through Pillow (PNG, JPEG, TIFF, ...).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class ImageLoadError(ValueError):
    """The file cannot be read as an image (message names the file and the reason)."""


def is_dicom(path: str | Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def load_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        image = _load_dicom(path) if is_dicom(path) else _load_pillow(path)
    except ImageLoadError:
        raise
    except Exception as exc:  # any decoder failure becomes one clear message
        raise ImageLoadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    if image.ndim != 2 or min(image.shape) < 2:
        raise ImageLoadError(f"{path}: expected a 2-D image, got shape {image.shape}")
    return image


def _load_pillow(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        grey = np.asarray(im.convert("F" if im.mode in ("I", "I;16", "F") else "L"), dtype=np.float32)
    return _rescale(grey, *((0.0, 255.0) if grey.max() <= 255 else (grey.min(), grey.max())))


def _load_dicom(path: Path) -> np.ndarray:
    """Rescale slope/intercept, VOI LUT or window (else 0.5-99.5 percentile), MONOCHROME1 inverted."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[len(pixels) // 2]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):  # colour / palette: luminance
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(pixels, ds) if photometric == "PALETTE COLOR" else pixels
        return np.asarray(rgb, dtype=np.float32).mean(axis=-1) / float(np.max(rgb) or 1)
    values = apply_modality_lut(pixels, ds).astype(np.float32)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=0).astype(np.float32)
        low, high = float(values.min()), float(values.max())
    else:
        low, high = np.percentile(values, [0.5, 99.5])
    image = _rescale(values, low, high)
    return 1.0 - image if photometric == "MONOCHROME1" else image


def _rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((values - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)
