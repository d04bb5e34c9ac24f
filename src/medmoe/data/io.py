"""``load_image(path)``: any supported medical image file -> float32 array in [0, 1], shape [H, W].

The format is recognised by content, not by extension (torchxrayvision style): DICOM by its
``DICM`` magic at byte 128, NIfTI-1/2 by its header (also gzipped), everything else through Pillow (PNG, JPEG, TIFF, ...); a file that
Pillow cannot identify is tried as headerless DICOM (no preamble). Compressed DICOM transfer
syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE) decode through the pylibjpeg plugins.
``load_image_bytes(data, name)`` decodes a whole file held in memory (a webdataset sample) the same way.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np

from ..errors import ImageLoadError


Source = Path | bytes  # a file, or a whole file's bytes held in memory (a webdataset sample)


def _file(source: Source):
    """What the decoders open: the path itself, or a file object over the bytes."""
    return io.BytesIO(source) if isinstance(source, bytes) else source


def _head(source: Source, n: int) -> bytes:
    if isinstance(source, bytes):
        return source[:n]
    with open(source, "rb") as f:
        return f.read(n)


def is_dicom(source: str | Path | bytes) -> bool:
    head = _head(source, 132)
    return len(head) == 132 and head[128:132] == b"DICM"


def is_nifti(source: str | Path | bytes) -> bool:
    """NIfTI-1 (sizeof_hdr 348, magic n+1/ni1) or NIfTI-2 (540, n+2/ni2), plain or gzipped."""
    head = _head(source, 540)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(_file(source), "rb") as f:
                head = f.read(540)
        except OSError:
            return False
    return (len(head) >= 348 and head[344:347] in (b"n+1", b"ni1")) or (len(head) >= 540 and head[4:7] in (b"n+2", b"ni2"))


def load_image(path: str | Path, nifti_slice: int | None = None) -> np.ndarray:
    """Decode ``path``. For NIfTI volumes: axial slice ``nifti_slice`` (default: the middle one)
    of the first volume, after reorienting to the closest canonical (RAS) orientation."""
    return _decode(Path(path), str(path), nifti_slice)


def load_image_bytes(data: bytes, name: str, nifti_slice: int | None = None) -> np.ndarray:
    """``load_image`` of a whole file's bytes held in memory; ``name`` labels error messages."""
    return _decode(bytes(data), name, nifti_slice)


def _decode(source: Source, name: str, nifti_slice: int | None) -> np.ndarray:
    from PIL import UnidentifiedImageError

    try:
        try:
            if is_dicom(source):
                image = _load_dicom(source)
            elif is_nifti(source):
                image = _load_nifti(source, nifti_slice)
            else:
                image = _load_pillow(source)
        except UnidentifiedImageError:
            try:
                image = _load_dicom(source, force=True)
            except Exception:
                raise ImageLoadError("not a recognised image (PNG, JPEG, TIFF, DICOM or NIfTI)") from None
        if image.ndim != 2 or min(image.shape) < 2:
            raise ImageLoadError(f"expected a 2-D image, got shape {image.shape}")
    except ImageLoadError as exc:
        raise ImageLoadError(f"{name}: {exc}") from exc.__cause__
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{name}: file not found") from exc
    except Exception as exc:  # any decoder failure becomes one clear message
        raise ImageLoadError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    return image


def _load_pillow(source: Source) -> np.ndarray:
    from PIL import Image

    with Image.open(_file(source)) as im:
        grey = np.asarray(im.convert("F" if im.mode in ("I", "I;16", "F") else "L"), dtype=np.float32)
    return _rescale(grey, *((0.0, 255.0) if grey.max() <= 255 else (grey.min(), grey.max())))


def _load_dicom(source: Source, force: bool = False) -> np.ndarray:
    """Rescale slope/intercept, VOI LUT or window (else 0.5-99.5 percentile), MONOCHROME1 inverted,
    multi-frame -> middle frame, colour and palette -> luminance."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(_file(source), force=force)
    if "PixelData" not in ds:
        raise ImageLoadError("DICOM file has no pixel data")
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


def _load_nifti(source: Source, index: int | None) -> np.ndarray:
    import nibabel as nib

    if isinstance(source, bytes):  # single-file NIfTI held in memory
        data = gzip.decompress(source) if source[:2] == b"\x1f\x8b" else source
        volume = (nib.Nifti2Image if data[4:7] == b"n+2" else nib.Nifti1Image).from_bytes(data)
    else:
        volume = nib.load(source)
    volume = nib.as_closest_canonical(volume)
    shape = volume.shape
    if len(shape) < 3:
        raise ImageLoadError(f"NIfTI image has {len(shape)} dimensions, expected a volume")
    index = shape[2] // 2 if index is None else index
    if not 0 <= index < shape[2]:
        raise ImageLoadError(f"slice {index} outside the {shape[2]} axial slices")
    slab = volume.dataobj[(slice(None), slice(None), index) + (0,) * (len(shape) - 3)]
    values = np.rot90(np.nan_to_num(np.asarray(slab, dtype=np.float32)))  # RAS (x right, y anterior) -> rows top-down
    return _rescale(values, *np.percentile(values, [0.5, 99.5]))


def _rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((values - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)
