"""load_image on real files shipped offline by pydicom and nibabel, and on our own PNG/JPEG/TIFF."""
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image

from medmoe.data.io import load_image, load_image_bytes
from medmoe.errors import ImageLoadError
from medmoe.data.transforms import ImageTransform, augment, to_model_input


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
    image = load_image(tmp_path / "v.nii.gz", slice_index=2)
    assert image.shape == (5, 6)
    assert image[:, -1].min() == 1 and image[:, :-1].max() == 0  # RAS: patient left at high x, last column
    assert load_image(tmp_path / "v.nii.gz", slice_index=0).max() == 0
    with pytest.raises(ImageLoadError, match="slice 9 outside"):
        load_image(tmp_path / "v.nii.gz", slice_index=9)


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


# ---------------------------------------------------------------- colour policy and .npy volumes
BANDS = {5: (1, 0, 0), 25: (0, 1, 0), 45: (0, 0, 1), 75: (0.251, 0.251, 0.251)}  # pydicom's SC_rgb test pattern rows


@pytest.mark.parametrize("name, photometric", [
    ("SC_rgb_rle.dcm", "RGB"),
    ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422"),
    ("SC_rgb_jpeg_dcmtk.dcm", "YBR_FULL"),  # JPEG baseline, stored as YCbCr
])
def test_colour_dicom_decodes_to_rgb_and_to_bt601_luma(name, photometric):
    assert pydicom.dcmread(dicom(name), stop_before_pixels=True).PhotometricInterpretation == photometric
    rgb, grey = load_image(dicom(name), colour="rgb"), load_image(dicom(name))
    assert rgb.shape == (100, 100, 3) and grey.shape == (100, 100)
    for row, colour in BANDS.items():
        np.testing.assert_allclose(rgb[row, 50], colour, atol=0.02)
        np.testing.assert_allclose(grey[row, 50], np.dot(colour, [0.299, 0.587, 0.114]), atol=0.01)
    np.testing.assert_allclose(grey, rgb @ np.array([0.299, 0.587, 0.114], np.float32), atol=1e-6)


def test_colour_dicom_luma_matches_pillow_grey(tmp_path):
    rgb = pydicom.dcmread(dicom("SC_rgb_rle.dcm")).pixel_array
    Image.fromarray(rgb).save(tmp_path / "same.png")
    np.testing.assert_allclose(load_image(tmp_path / "same.png"), load_image(dicom("SC_rgb_rle.dcm")), atol=1 / 255)
    np.testing.assert_array_equal(load_image(tmp_path / "same.png", colour="rgb"), rgb / np.float32(255))


def test_palette_dicom_in_colour_and_grey():
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(dicom("examples_palette.dcm"))
    lut = apply_color_lut(ds.pixel_array, ds)
    rgb = load_image(dicom("examples_palette.dcm"), colour="rgb")
    np.testing.assert_allclose(rgb, lut / np.iinfo(lut.dtype).max, atol=1e-6)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 0.1  # it really is colour
    np.testing.assert_allclose(load_image(dicom("examples_palette.dcm")), rgb @ np.float32([0.299, 0.587, 0.114]),
                               atol=1e-6)


def test_slice_index_picks_a_dicom_frame():
    first = load_image(dicom("SC_rgb_rle_2frame.dcm"), slice_index=0, colour="rgb")
    middle = load_image(dicom("SC_rgb_rle_2frame.dcm"), colour="rgb")  # frame 1 of 2: the inverse pattern
    np.testing.assert_allclose(first[5, 50], (1, 0, 0), atol=1e-6)
    np.testing.assert_allclose(middle, 1 - first, atol=1 / 255)
    with pytest.raises(ImageLoadError, match="slice 2 outside the 2 frames"):
        load_image(dicom("SC_rgb_rle_2frame.dcm"), slice_index=2)


def test_rgb_keeps_colour_pictures_and_leaves_grey_ones_grey(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "fundus.png")
    Image.fromarray(np.dstack([rgb, np.full((20, 30), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "xray.png")
    np.testing.assert_array_equal(load_image(tmp_path / "fundus.png", colour="rgb"), rgb / np.float32(255))
    np.testing.assert_array_equal(load_image(tmp_path / "rgba.png", colour="rgb"), rgb / np.float32(255))
    assert load_image(tmp_path / "fundus.png").shape == (20, 30)  # gray: one channel
    assert load_image(tmp_path / "xray.png", colour="rgb").shape == (20, 30)
    assert load_image(dicom("CT_small.dcm"), colour="rgb").shape == (128, 128)
    with pytest.raises(ValueError, match="colour must be one of gray, rgb"):
        load_image(tmp_path / "xray.png", colour="RGB")


def test_npy_volumes_give_a_slice(tmp_path):
    from medmoe.data.io import load_image_bytes

    volume = np.arange(5 * 32 * 32, dtype=np.uint32).reshape(5, 32, 32).astype(np.uint8)  # MRNet: uint8 [slices, H, W]
    volume[:, 0, 0] = np.arange(5) * 50
    np.save(tmp_path / "0001.npy", volume)
    middle = load_image(tmp_path / "0001.npy")
    np.testing.assert_array_equal(middle, volume[2] / np.float32(255))  # uint8 scales by its range
    assert load_image(tmp_path / "0001.npy", slice_index=4)[0, 0] == pytest.approx(200 / 255)
    np.testing.assert_array_equal(load_image_bytes((tmp_path / "0001.npy").read_bytes(), "0001.npy", slice_index=1),
                                  volume[1] / np.float32(255))
    (tmp_path / "noext").write_bytes((tmp_path / "0001.npy").read_bytes())  # sniffed by content
    np.testing.assert_array_equal(load_image(tmp_path / "noext"), middle)
    assert load_image(tmp_path / "0001.npy", colour="rgb").shape == (32, 32)
    with pytest.raises(ImageLoadError, match="0001.npy: slice 5 outside the 5 slices"):
        load_image(tmp_path / "0001.npy", slice_index=5)


def test_npy_other_types_and_shapes(tmp_path):
    np.save(tmp_path / "f.npy", np.array([[-3.0, 0.0], [1.0, np.nan]]))  # floats: min-max, NaN -> 0
    np.testing.assert_allclose(load_image(tmp_path / "f.npy"), [[0, 0.75], [1, 0.75]])
    np.save(tmp_path / "4d.npy", np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ImageLoadError, match=r"4d.npy: .npy array of shape \(2, 3, 4, 5\)"):
        load_image(tmp_path / "4d.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ImageLoadError, match="objects.npy: cannot decode.*allow_pickle"):  # never unpickled
        load_image(tmp_path / "objects.npy")


def test_colour_transforms_treat_every_channel_alike():
    import torch

    rgb = np.random.default_rng(1).random((40, 50, 3), dtype=np.float32)
    x = to_model_input(rgb, 32)
    for c in range(3):
        np.testing.assert_array_equal(x[c], to_model_input(rgb[..., c], 32)[c])  # no mixing of channels
        a = augment(rgb, 32, torch.Generator().manual_seed(3))[c]
        assert torch.equal(a, augment(rgb[..., c], 32, torch.Generator().manual_seed(3))[c])  # same crop and jitter
    grey = rgb[..., 0]
    assert torch.equal(to_model_input(np.dstack([grey] * 3), 32), to_model_input(grey, 32))
    medclip = ImageTransform(32, "rgb", (0.5862785803043838,) * 3, (0.27950088968644304,) * 3)
    view = torch.from_numpy(grey)[None, None]
    expected = (torch.nn.functional.interpolate(view, size=(32, 40), mode="bilinear", antialias=True)[0, 0, :, 4:36]
                .clamp(0, 1) - 0.5862785803043838) / 0.27950088968644304
    assert torch.allclose(medclip(grey)[1], expected, atol=1e-6)


def test_the_dataset_builds_input_by_the_models_config(tmp_path):
    import torch

    from medmoe.config import load_config
    from medmoe.data.dataset import ImageReportDataset
    from medmoe.data.manifest import Row

    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 200  # a red pathology slide
    Image.fromarray(rgb).save(tmp_path / "slide.png")
    row = Row(row=2, image=tmp_path / "slide.png", report="red slide", modality="pathology")
    for colour in ("gray", "rgb"):
        config = load_config("tiny", colour=colour, image_mean=[0.5] * 3, image_std=[0.25] * 3)
        dataset = ImageReportDataset([row], ImageTransform.of(config), config.modalities)
        evaluation, training = (dataset[key]["image"] * 0.25 + 0.5 for key in (0, (0, 7)))  # de-normalised
        assert evaluation.shape == training.shape == (3, 64, 64)
        if colour == "gray":
            assert torch.equal(evaluation[0], evaluation[2]) and torch.equal(training[0], training[2])
        else:  # red stays red; the jitter scales the contrast by 0.9-1.1
            assert torch.allclose(evaluation[0] - evaluation[2], torch.tensor(200 / 255), atol=1e-6)
            assert 0.65 < (training[0] - training[2]).mean() < 0.9
    grey = load_image(tmp_path / "slide.png")
    assert torch.allclose(ImageReportDataset([row], ImageTransform(64), ["pathology"])[0]["image"],
                          to_model_input(grey, 64))


# ---------------------------------------------------------------- the pixel guard (one limit for every format)


def huge_files(folder: Path) -> dict[str, Path]:
    """Small files that declare huge images: an RLE DICOM declaring 16,000 x 16,000 (pydicom's MR_small_RLE with
    its size tags changed), a gzipped NIfTI header declaring 3,000^3 voxels, a PNG declaring 60,000 x 60,000 and
    a .npy header declaring 20,000 x 20,000; none holds those pixels, so each can only be refused by its header."""
    import gzip
    import struct
    import zlib

    import nibabel

    files = {}
    ds = pydicom.dcmread(dicom("MR_small_RLE.dcm"))
    ds.Rows = ds.Columns = 16000
    ds.save_as(folder / "rle.dcm")
    files["rle dicom"] = folder / "rle.dcm"
    header = nibabel.Nifti1Header()
    header.set_data_shape((3000, 3000, 3000))
    header.set_data_dtype(np.uint8)
    (folder / "huge.nii.gz").write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 64))
    files["nifti"] = folder / "huge.nii.gz"

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0))
                                      + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    files["png"] = folder / "huge.png"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2), np.uint8)) | {"shape": (20000, 20000)}
    with open(folder / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 16)
    files["npy"] = folder / "huge.npy"
    return files


@pytest.mark.parametrize("kind", ["rle dicom", "nifti", "png", "npy"])
def test_files_declaring_more_pixels_than_the_limit_are_refused_before_decoding(tmp_path, kind):
    import time
    import tracemalloc

    path = huge_files(tmp_path)[kind]
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ImageLoadError) as refused:
        load_image(path)
    seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and ("over the limit" in message or "refused" in message)
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MB allocated to refuse {kind}"
    assert seconds < 30  # (a refusal takes milliseconds; this only guards against a decode sneaking in)
    with pytest.raises(ImageLoadError, match="over the limit|refused"):
        load_image_bytes(path.read_bytes(), path.name)


def test_the_limit_is_one_setting_for_every_format_and_reads_no_pixel_data(tmp_path, monkeypatch):
    """An uncompressed 3,000 x 3,000 16-bit DICOM (18 MB of pixels) is refused under a 1 M limit without its pixel
    data being read; the same limit refuses a 2,000 x 2,000 PNG and lets a 64 x 64 DICOM through."""
    import tracemalloc

    ds = pydicom.dcmread(dicom("MR_small.dcm"))
    ds.Rows = ds.Columns = 3000
    ds.PixelData = np.zeros((3000, 3000), np.uint16).tobytes()
    ds.save_as(tmp_path / "big.dcm")
    Image.new("L", (2000, 2000)).save(tmp_path / "big.png")
    monkeypatch.setenv("MEDMOE_MAX_PIXELS", "1_000_000")
    tracemalloc.start()
    with pytest.raises(ImageLoadError, match=r"3000 x 3000 x 1 x 1 rows x columns x frames x samples = 9,000,000 "
                                             r"pixels, over the limit of 1,000,000"):
        load_image(tmp_path / "big.dcm")
    assert tracemalloc.get_traced_memory()[1] < 4 * 2**20  # the 18 MB of pixel data were never read
    tracemalloc.stop()
    with pytest.raises(ImageLoadError, match="over the limit of 1,000,000"):
        load_image(tmp_path / "big.png")
    assert load_image(dicom("MR_small.dcm")).shape == (64, 64)
    monkeypatch.setenv("MEDMOE_MAX_PIXELS", "lots")
    with pytest.raises(ImageLoadError, match="MEDMOE_MAX_PIXELS='lots' must be a whole number"):
        load_image(dicom("MR_small.dcm"))


def test_a_refused_file_is_a_skipped_and_counted_manifest_row(tmp_path):
    from medmoe.data.manifest import read_manifest

    files = huge_files(tmp_path)
    Image.new("L", (32, 32), 100).save(tmp_path / "ok.png")
    rows = [{"image": "ok.png", "report": "Fine."}] + [{"image": p.name, "report": "Huge."} for p in files.values()]
    (tmp_path / "m.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    manifest = read_manifest(tmp_path / "m.jsonl", decode=True)
    assert len(manifest.rows) == 1 and [u["row"] for u in manifest.unusable] == [2, 3, 4, 5]
    assert all("over the limit" in u["reason"] or "refused" in u["reason"] for u in manifest.unusable)


def test_max_pixels_option_sets_the_limit_for_a_command(tmp_path, monkeypatch, capsys):
    from medmoe.cli import main

    monkeypatch.setenv("MEDMOE_MAX_PIXELS", "")  # restored after the test: main sets it for the process
    Image.new("L", (64, 64), 100).save(tmp_path / "a.png")
    Image.new("L", (100, 100), 100).save(tmp_path / "b.png")
    (tmp_path / "m.jsonl").write_text('{"image": "a.png", "report": "Fine."}\n{"image": "b.png", "report": "Big."}\n')
    assert main(["data", "check", str(tmp_path / "m.jsonl")]) == 0
    assert main(["--max-pixels", "5000", "data", "check", str(tmp_path / "m.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "2 rows, 2 usable" in out and "2 rows, 1 usable" in out and "= 10,000 pixels, over the limit of 5,000" in out


def test_reduced_jpeg_decoding_matches_the_full_decode_within_tolerance(tmp_path):
    """A big JPEG decoded at 1/2-1/8 size in the DCT (``reduced``) gives the model the same input as the full decode:
    within 0.03 everywhere and 0.005 on average, on a 0-1 scale (a smooth radiograph-like image with noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:1530, :1270] / 1530
    picture = np.clip(0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y) + 0.03 * rng.standard_normal(y.shape), 0, 1)
    Image.fromarray((picture * 255).astype(np.uint8)).save(tmp_path / "cxr.jpg", quality=95)
    transform = ImageTransform(112)
    reduced = transform.load(tmp_path / "cxr.jpg", reduced=True)
    assert min(reduced.shape) == 159 and min(reduced.shape) >= 1.25 * 112  # 1/8 of 1270: the smallest that is enough
    difference = (transform(reduced) - transform(transform.load(tmp_path / "cxr.jpg"))).abs() * 0.225  # undo std
    assert difference.max() < 0.03 and difference.mean() < 0.005
    assert load_image(tmp_path / "cxr.jpg").shape == (1530, 1270)  # without the hint: full size
