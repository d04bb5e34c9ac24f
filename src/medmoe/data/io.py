"""``load_image(path)``: any supported medical image file -> float32 array in [0, 1], shape [H, W].

The format is recognised by content, not by extension (torchxrayvision style): DICOM by its
``DICM`` magic at byte 128, NIfTI-1/2 by its header (also gzipped), everything else through Pillow (PNG, JPEG, TIFF, ...); a file that
Pillow cannot identify is tried as headerless DICOM (no preamble). Compressed DICOM transfer
syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) decode through the pylibjpeg plugins.
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


def is_nifti(path: str | Path) -> bool:
    """NIfTI-1 (sizeof_hdr 348, magic n+1/ni1) or NIfTI-2 (540, n+2/ni2), plain or gzipped."""
    import gzip

    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            head = f.read(540)
    except OSError:
        return False
    return (len(head) >= 348 and head[344:347] in (b"n+1", b"ni1")) or (len(head) >= 540 and head[4:7] in (b"n+2", b"ni2"))


def load_image(path: str | Path, nifti_slice: int | None = None) -> np.ndarray:
    """Decode ``path``. For NIfTI volumes: axial slice ``nifti_slice`` (default: the middle one)
    of the first volume, after reorienting to the closest canonical (RAS) orientation."""
    from PIL import UnidentifiedImageError

    path = Path(path)
    try:
        try:
            if is_dicom(path):
                image = _load_dicom(path)
            elif is_nifti(path):
                image = _load_nifti(path, nifti_slice)
            else:
                image = _load_pillow(path)
        except UnidentifiedImageError:
            try:
                image = _load_dicom(path, force=True)
            except Exception:
                raise ImageLoadError(f"{path}: not a recognised image (PNG, JPEG, TIFF, DICOM or NIfTI)") from None
    except ImageLoadError:
        raise
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{path}: file not found") from exc
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


def _load_dicom(path: Path, force: bool = False) -> np.ndarray:
    """Rescale slope/intercept, VOI LUT or window (else 0.5-99.5 percentile), MONOCHROME1 inverted,
    multi-frame -> middle frame, colour and palette -> luminance."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path, force=force)
    if "PixelData" not in ds:
        raise ImageLoadError(f"{path}: DICOM file has no pixel data")
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


def _load_nifti(path: Path, index: int | None) -> np.ndarray:
    import nibabel as nib

    volume = nib.as_closest_canonical(nib.load(path))
    shape = volume.shape
    if len(shape) < 3:
        raise ImageLoadError(f"{path}: NIfTI image has {len(shape)} dimensions, expected a volume")
    index = shape[2] // 2 if index is None else index
    if not 0 <= index < shape[2]:
        raise ImageLoadError(f"{path}: slice {index} outside the {shape[2]} axial slices")
    slab = volume.dataobj[(slice(None), slice(None), index) + (0,) * (len(shape) - 3)]
    values = np.rot90(np.nan_to_num(np.asarray(slab, dtype=np.float32)))  # RAS (x right, y anterior) -> rows top-down
    return _rescale(values, *np.percentile(values, [0.5, 99.5]))


def _rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((values - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)
