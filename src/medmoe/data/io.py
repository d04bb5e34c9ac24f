"""``load_image(path)``: any supported medical image file -> float32 array in [0, 1].

The format is recognised by content, not by extension (torchxrayvision style): DICOM by its
``DICM`` magic at byte 128, NIfTI-1/2 by its header (also gzipped), NumPy ``.npy`` by its
``\\x93NUMPY`` magic, everything else through Pillow (PNG, JPEG, TIFF, ...); a file that Pillow
cannot identify is tried as headerless DICOM (no preamble). Compressed DICOM transfer syntaxes
(JPEG, JPEG-LS, JPEG 2000, RLE) decode through the pylibjpeg plugins.
``load_image_bytes(data, name)`` decodes a whole file held in memory (a webdataset sample) the same way.

The shape follows the colour policy (``MedMoEConfig.colour``):

* ``colour="gray"``: always [H, W]; colour sources become their ITU-R BT.601 luma
  (0.299 R + 0.587 G + 0.114 B, what Pillow's "L" mode computes).
* ``colour="rgb"``: [H, W, 3] (R, G, B) when the source holds colour (an RGB/RGBA/palette/CMYK/YCbCr
  picture; DICOM RGB, YBR_FULL, YBR_FULL_422 or PALETTE COLOR), [H, W] when it is grey
  (MONOCHROME DICOM, NIfTI, ``.npy``, grey pictures).

Volumes give one 2-D slice, ``slice_index`` (default: the middle one): the axial slice of a NIfTI
volume, index ``slice_index`` along the first axis of a 3-D ``.npy`` array (MRNet's
[slices, 256, 256]), the frame of a multi-frame DICOM.

A file that declares more pixels than ``max_pixels()`` (rows x columns x frames x samples: DICOM's
tags, the NIfTI and ``.npy`` headers, Pillow's header; Pillow's own default, 89,478,485, unless the
``MEDMOE_MAX_PIXELS`` environment variable says otherwise) is refused before anything is decoded, with
an ``ImageLoadError`` naming the file.

``min_side``: the decoder may stop at a shorter side of ``min_side`` pixels or more when that is cheaper:
a JPEG is decoded at 1/2, 1/4 or 1/8 of its size in the DCT (Pillow's ``draft``) when the image would
still be at least that large. Everything else decodes at full size. Intensities are rescaled in float32,
in place; the percentiles of a DICOM or NIfTI without a window are taken over at most ~1M pixels on a
regular grid.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..config import COLOURS
from ..errors import ImageLoadError


COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "P", "PA")  # Pillow modes holding colour
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's "L" mode
Source = Path | bytes  # a file, or a whole file's bytes held in memory (a webdataset sample)
MAX_PIXELS_ENV = "MEDMOE_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's Image.MAX_IMAGE_PIXELS
PERCENTILE_SAMPLES = 1 << 20  # pixels the 0.5-99.5 percentiles are estimated from


def max_pixels() -> int:
    """The most pixels (rows x columns x frames x samples) a file may declare: ``MEDMOE_MAX_PIXELS``, else
    Pillow's default limit."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ImageLoadError(f"{MAX_PIXELS_ENV}={text!r} must be a whole number of pixels >= 1")
    return value


def check_pixels(shape: tuple[int, ...], what: str) -> None:
    """ImageLoadError when the declared ``shape`` (its product is the pixel count) is over ``max_pixels()``."""
    pixels, limit = math.prod(int(n) for n in shape), max_pixels()
    if pixels > limit:
        dims = " x ".join(str(int(n)) for n in shape)
        raise ImageLoadError(f"declares {dims} {what} = {pixels:,} pixels, over the limit of {limit:,} "
                             f"(refused before decoding; set {MAX_PIXELS_ENV} to allow more)")


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
    try:
        head = _nifti_header(source)
    except OSError:
        return False
    return (len(head) >= 348 and head[344:347] in (b"n+1", b"ni1")) or (len(head) >= 540 and head[4:7] in (b"n+2", b"ni2"))


def is_npy(source: str | Path | bytes) -> bool:
    return _head(source, 6) == b"\x93NUMPY"


def load_image(path: str | Path, slice_index: int | None = None, colour: str = "gray",
               min_side: int | None = None) -> np.ndarray:
    """Decode ``path``: [H, W], or [H, W, 3] for a colour source under ``colour="rgb"`` (module
    docstring). NIfTI volumes are reoriented to the closest canonical (RAS) orientation first.
    ``min_side``: a JPEG may come back smaller, its shorter side still at least this long."""
    return _decode(Path(path), str(path), slice_index, colour, min_side)


def load_image_bytes(data: bytes, name: str, slice_index: int | None = None, colour: str = "gray",
                     min_side: int | None = None) -> np.ndarray:
    """``load_image`` of a whole file's bytes held in memory; ``name`` labels error messages."""
    return _decode(bytes(data), name, slice_index, colour, min_side)


def _decode(source: Source, name: str, slice_index: int | None, colour: str, min_side: int | None = None) -> np.ndarray:
    from PIL import UnidentifiedImageError

    if colour not in COLOURS:
        raise ValueError(f"colour must be one of {', '.join(COLOURS)} (got {colour!r})")
    try:
        try:
            if is_dicom(source):
                image = _load_dicom(source, slice_index, colour)
            elif is_nifti(source):
                image = _load_nifti(source, slice_index)
            elif is_npy(source):
                image = _load_npy(source, slice_index)
            else:
                image = _load_pillow(source, colour, min_side)
        except UnidentifiedImageError:
            try:
                image = _load_dicom(source, slice_index, colour, force=True)
            except Exception:
                raise ImageLoadError("not a recognised image (PNG, JPEG, TIFF, DICOM, NIfTI or .npy)") from None
        if not (image.ndim == 2 or image.shape[2:] == (3,)) or min(image.shape[:2]) < 2:
            raise ImageLoadError(f"expected a 2-D image, got shape {image.shape}")
    except ImageLoadError as exc:
        raise ImageLoadError(f"{name}: {exc}") from exc.__cause__
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{name}: file not found") from exc
    except Exception as exc:  # any decoder failure becomes one clear message
        raise ImageLoadError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})") from exc
    return image


def _open_pillow(source: Source):
    """Pillow's image, its declared size checked against ``max_pixels()`` (Pillow reads only the header)."""
    from PIL import Image

    limit, pillows = max_pixels(), Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is ours: Pillow's own check
        try:  # (at twice its MAX_IMAGE_PIXELS) then only stops what ours would
            Image.MAX_IMAGE_PIXELS = max(limit, pillows or 0)
            im = Image.open(_file(source))
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(f"refused before decoding: {exc}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = pillows
    try:
        check_pixels((im.height, im.width, len(im.getbands())), "rows x columns x samples")
    except ImageLoadError:
        im.close()
        raise
    return im


def _load_pillow(source: Source, colour: str, min_side: int | None = None) -> np.ndarray:
    with _open_pillow(source) as im:
        rgb = colour == "rgb" and im.mode in COLOUR_MODES
        if min_side and im.format == "JPEG" and min(im.size) > 2 * min_side:  # decode at 1/2, 1/4 or 1/8 in the DCT
            scale = min_side / min(im.size)
            im.draft("RGB" if rgb else "L", (math.ceil(im.width * scale), math.ceil(im.height * scale)))
        if rgb:
            return _rescale(np.asarray(im.convert("RGB"), dtype=np.float32), 0.0, 255.0)
        grey = np.asarray(im.convert("F" if im.mode in ("I", "I;16", "F") else "L"), dtype=np.float32)
    return _rescale(grey, *((0.0, 255.0) if grey.max() <= 255 else (grey.min(), grey.max())))


def _load_dicom(source: Source, index: int | None, colour: str, force: bool = False) -> np.ndarray:
    """Rescale slope/intercept, VOI LUT or window (else 0.5-99.5 percentile), MONOCHROME1 inverted,
    multi-frame -> frame ``index``; colour (RGB, YBR, palette) -> RGB by bit depth, or its luma."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    # a file's pixel data is read only once its declared size has passed the check
    ds = pydicom.dcmread(_file(source), force=force, defer_size=None if isinstance(source, bytes) else "64 KB")
    if "PixelData" not in ds:
        raise ImageLoadError("DICOM file has no pixel data")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    check_pixels((ds.get("Rows", 0), ds.get("Columns", 0), frames, ds.get("SamplesPerPixel", 1) or 1),
                 "rows x columns x frames x samples")
    frame = _slice(index, frames, "frames") if frames > 1 else None
    ds.pixel_array_options(index=frame, as_rgb=True)  # one frame; YBR_FULL(_422) decodes to RGB
    pixels = ds.pixel_array
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels = apply_color_lut(pixels, ds)  # uint8 or uint16, as deep as the lookup table
            top = np.iinfo(pixels.dtype).max
        else:
            top = 2 ** int(ds.BitsStored) - 1
        values = pixels.astype(np.float32)
        return _rescale(values if colour == "rgb" else values @ LUMA, 0.0, top)
    if "ModalityLUTSequence" in ds:
        values = apply_modality_lut(pixels, ds).astype(np.float32)
    else:  # the linear rescale, in float32 and in place (pydicom's makes a float64 copy)
        values = pixels.astype(np.float32)
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        if slope != 1:
            values *= slope
        if intercept:
            values += intercept
    if "VOILUTSequence" in ds or ("WindowCenter" in ds and _voi_function(ds) != "LINEAR"):
        values = apply_voi_lut(values, ds, index=0).astype(np.float32)
        low, high = float(values.min()), float(values.max())
    elif "WindowCenter" in ds:
        values = _window(values, _first(ds.WindowCenter), _first(ds.WindowWidth))
        low, high = float(values.min()), float(values.max())
    else:
        low, high = _percentiles(values)
    image = _rescale(values, low, high)
    if photometric == "MONOCHROME1":
        np.subtract(1.0, image, out=image)
    return image


def _first(value) -> float:
    """A (possibly multi-valued) DICOM number's first value."""
    try:
        return float(value)
    except TypeError:
        return float(value[0])


def _voi_function(ds) -> str:
    return str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()


def _window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's LINEAR window (PS3.3 C.11.2.1.2.1) in place, to [0, 1]: the affine map of pydicom's
    ``apply_windowing`` to its output range, which the min-max rescale after it makes the same."""
    width = max(width, 1.0)
    values -= center - 0.5
    values *= 1.0 / max(width - 1.0, 1e-6)
    values += 0.5
    return np.clip(values, 0.0, 1.0, out=values)


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles, from at most ~``PERCENTILE_SAMPLES`` pixels on a regular grid."""
    step = max(1, math.isqrt(values.size // PERCENTILE_SAMPLES))
    low, high = np.percentile(values[::step, ::step] if values.ndim >= 2 else values[::step], [0.5, 99.5])
    return float(low), float(high)


def _load_nifti(source: Source, index: int | None) -> np.ndarray:
    import nibabel as nib

    head = _nifti_header(source)
    header = (nib.Nifti2Header if head[4:7] in (b"n+2", b"ni2") else nib.Nifti1Header).from_fileobj(io.BytesIO(head))
    check_pixels(header.get_data_shape(), "voxels")
    if isinstance(source, bytes):  # single-file NIfTI held in memory
        data = gzip.decompress(source) if source[:2] == b"\x1f\x8b" else source
        volume = (nib.Nifti2Image if data[4:7] == b"n+2" else nib.Nifti1Image).from_bytes(data)
    else:
        volume = nib.load(source)
    volume = nib.as_closest_canonical(volume)
    shape = volume.shape
    if len(shape) < 3:
        raise ImageLoadError(f"NIfTI image has {len(shape)} dimensions, expected a volume")
    index = _slice(index, shape[2], "axial slices")
    slab = volume.dataobj[(slice(None), slice(None), index) + (0,) * (len(shape) - 3)]
    values = np.rot90(np.nan_to_num(np.asarray(slab, dtype=np.float32)))  # RAS (x right, y anterior) -> rows top-down
    return _rescale(values, *_percentiles(values))


def _nifti_header(source: Source) -> bytes:
    """The first 540 bytes of a NIfTI file (its header), decompressing no more of a gzipped one."""
    head = _head(source, 540)
    if head[:2] == b"\x1f\x8b":
        with gzip.open(_file(source), "rb") as f:
            head = f.read(540)
    return head


def _load_npy(source: Source, index: int | None) -> np.ndarray:
    """A 2-D array as it is, or slice ``index`` of the first axis of a 3-D one; uint8 by its range
    (/255, as 8-bit pictures), other types min-max."""
    with (io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape = read_header(f)[0]
        check_pixels(shape, "array elements")
        f.seek(0)
        array = np.load(f, allow_pickle=False)
    if array.ndim == 3:
        array = array[_slice(index, len(array), "slices")]
    if array.ndim != 2:
        raise ImageLoadError(f".npy array of shape {array.shape}, expected [H, W] or [slices, H, W]")
    values = np.nan_to_num(array.astype(np.float32))
    return _rescale(values, *((0.0, 255.0) if array.dtype == np.uint8 else (values.min(), values.max())))


def _slice(index: int | None, n: int, what: str) -> int:
    """Slice ``index`` of a volume of ``n`` (default: the middle one), checked."""
    index = n // 2 if index is None else index
    if not 0 <= index < n:
        raise ImageLoadError(f"slice {index} outside the {n} {what}")
    return index


def _rescale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """(values - low) / (high - low) clipped to [0, 1], float32, in place on a float32 array."""
    if not (values.dtype == np.float32 and values.flags.writeable and values.flags.c_contiguous):
        values = np.array(values, dtype=np.float32, order="C")
    if low:
        values -= low
    values /= max(float(high - low), 1e-6)
    return np.clip(values, 0.0, 1.0, out=values)
