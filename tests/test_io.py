"""load_image on real files shipped offline by pydicom and nibabel, and on our own PNG/JPEG/TIFF."""
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image

from medmoe.data.io import load_image
from medmoe.errors import ImageLoadError
from medmoe.data.transforms import augment, to_model_input


def dicom(name):
    return pydicom.data.get_testdata_file(name, download=False)


def nifti(name):
    import nibabel

    return str(Path(nibabel.__file__).parent / "tests" / "data" / name)


@pytest.mark.parametrize("name, shape", [
    ("CT_small.dcm", (128, 128)),                 # CT, rescale slope/intercept
    ("MR_small.dcm", (64, 64)),                   # MR
    ("MR_small_RLE.dcm", (64, 64)),               # RLE
    ("MR_small_jp2klossless.dcm", (64, 64)),      # JPEG 2000
    ("MR_small_jpeg_ls_lossless.dcm", (64, 64)),  # JPEG-LS
    ("JPGExtended.dcm", (1024, 256)),             # 12-bit extended JPEG
    ("examples_palette.dcm", (350, 800)),         # US, palette colour
    ("examples_ybr_color.dcm", (240, 320)),       # US, 30-frame YBR colour
    ("rtdose.dcm", (10, 10)),                     # 15 frames
])
def test_real_dicom_files_decode_to_unit_range(name, shape):
    image = load_image(dicom(name))
    assert image.shape == shape and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.01


def test_lossless_compression_decodes_to_the_same_pixels():
    plain = load_image(dicom("MR_small.dcm"))
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_allclose(load_image(dicom(name)), plain, atol=1e-6)


def test_ct_uses_rescale_and_window(tmp_path):
    ds = pydicom.dcmread(dicom("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    ds.WindowCenter, ds.WindowWidth = 40, 400  # soft-tissue window
    ds.save_as(tmp_path / "ct.dcm")
    image = load_image(tmp_path / "ct.dcm")
    expected = np.clip((hu - (40 - 0.5) - 0.5) / (400 - 1) + 0.5, 0, 1)  # DICOM linear VOI function
    np.testing.assert_allclose(image, expected, atol=2e-3)


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(dicom("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    np.testing.assert_allclose(load_image(tmp_path / "m1.dcm"), 1 - load_image(dicom("MR_small.dcm")), atol=1e-6)


def test_headerless_dicom_and_misleading_extensions(tmp_path):
    ds = pydicom.dcmread(dicom("CT_small.dcm"))
    pydicom.dcmwrite(tmp_path / "raw.img", ds, enforce_file_format=False)
    body = (tmp_path / "raw.img").read_bytes()
    (tmp_path / "headerless.png").write_bytes(body[132:] if body[128:132] == b"DICM" else body)
    pydicom.dcmwrite(tmp_path / "noext", ds)
    reference = load_image(dicom("CT_small.dcm"))
    np.testing.assert_allclose(load_image(tmp_path / "noext"), reference)
    assert load_image(tmp_path / "headerless.png").shape == reference.shape


@pytest.mark.parametrize("name, shape", [
    ("anatomical.nii", (41, 33)), ("example4d.nii.gz", (96, 128)), ("example_nifti2.nii.gz", (20, 32)),
])
def test_real_nifti_files_give_the_middle_axial_slice(name, shape):
    image = load_image(nifti(name))
    assert image.shape == shape and 0 <= image.min() and image.max() <= 1 and image.std() > 0.01


def test_nifti_slice_choice_and_canonical_orientation(tmp_path):
    import nibabel

    volume = np.zeros((6, 5, 4), np.float32)
    volume[0, :, 2] = 1.0  # the patient-left ... in a LAS volume, x index 0 is the patient's left
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    nibabel.save(nibabel.Nifti1Image(volume, las), tmp_path / "v.nii.gz")
    image = load_image(tmp_path / "v.nii.gz", nifti_slice=2)
    assert image.shape == (5, 6)
    assert image[:, -1].min() == 1 and image[:, :-1].max() == 0  # RAS: patient left at high x, last column
    assert load_image(tmp_path / "v.nii.gz", nifti_slice=0).max() == 0
    with pytest.raises(ImageLoadError, match="slice 9 outside"):
        load_image(tmp_path / "v.nii.gz", nifti_slice=9)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_common_formats_and_16_bit(tmp_path, fmt):
    grey = np.tile(np.linspace(0, 250, 64), (48, 1)).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "a.img", format=fmt)
    image = load_image(tmp_path / "a.img")
    assert image.shape == (48, 64)
    np.testing.assert_allclose(image, grey / 255, atol=0.03 if fmt == "JPEG" else 1e-6)
    Image.fromarray((grey.astype(np.uint16) * 200)).save(tmp_path / "b.png")
    assert load_image(tmp_path / "b.png").max() == 1.0


def test_broken_files_raise_one_clear_error(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="junk.png: not a recognised image"):
        load_image(tmp_path / "junk.png")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(ImageLoadError, match="cut.png: "):
        load_image(tmp_path / "cut.png")
    with pytest.raises(ImageLoadError, match="missing.png: file not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="no pixel data"):
        load_image(dicom("rtplan.dcm"))


def test_transforms_give_normalised_three_channel_input():
    import torch

    image = np.random.default_rng(0).random((80, 100), dtype=np.float32)
    x = to_model_input(image, 64)
    assert x.shape == (3, 64, 64)
    grey = x[0] * 0.229 + 0.485  # every channel de-normalises to the same grey image in [0, 1]
    assert torch.allclose(grey, x[2] * 0.225 + 0.406, atol=1e-5) and 0 <= grey.min() and grey.max() <= 1
    a = augment(image, 64, torch.Generator().manual_seed(1))
    b = augment(image, 64, torch.Generator().manual_seed(1))
    c = augment(image, 64, torch.Generator().manual_seed(2))
    assert a.shape == (3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
