"""`medmoe app`: what the page shows for an upload, the server under bad uploads, and the page in a
real headless browser (Debian's chromium + chromium-driver through selenium)."""
import base64
import io
import json
import shutil
import threading
import urllib.error
import urllib.request
from urllib.parse import urlencode

import numpy as np
import pytest
import torch
from PIL import Image

import medmoe
from medmoe.app import analyse as analyse_module
from medmoe.app.analyse import analyse, map_overlay, trained_with_modalities
from medmoe.classify import classify, expert_modalities
from medmoe.app.server import AppServer
from medmoe.errors import ConfigError, ImageLoadError

CLASSES = ["pneumonia", "normal", "fracture"]
REPORT = "Small nodule in the right lung, no effusion."


@pytest.fixture(scope="module")
def dicom():
    from pydicom.data import get_testdata_file

    return get_testdata_file("CT_small.dcm")


@pytest.fixture(scope="module")
def small_mr():
    """pydicom's MR_small.dcm: 64 x 64 pixels."""
    from pydicom.data import get_testdata_file

    return get_testdata_file("MR_small.dcm")


def test_analyse_shows_probabilities_routing_and_attention(tiny, dicom):
    result = analyse(tiny, open(dicom, "rb").read(), "CT_small.dcm", CLASSES + [" "], REPORT)
    expected = classify(tiny, [dicom], CLASSES)
    assert list(result["probabilities"]) == CLASSES
    assert result["probabilities"]["fracture"] == pytest.approx(float(expected.probabilities[0, 2]), abs=1e-6)
    assert result["expert"] == int(expected.expert[0])
    assert [r["probability"] for r in result["router"]] == pytest.approx(expected.router_probabilities[0].tolist())
    assert all(r["modalities"] == [] for r in result["router"])  # never trained: no modality names
    assert result["size"] == [128, 128]  # CT_small is 128 x 128: shown as loaded (windowed), not the model's view

    assert base64.b64decode(result["image"])[:8] == b"\x89PNG\r\n\x1a\n"
    # the report's affirmed finding ("no effusion" is negated), over the report router's expert
    assert [m["label"] for m in result["maps"]] == ["nodule"] and result["report_expert"] in range(4)
    assert result["maps_of"] == "the report" and result["maps"][0]["uniform"] == pytest.approx(1 / 16 ** 2)
    with Image.open(io.BytesIO(base64.b64decode(result["maps"][0]["overlay"]))) as overlay:
        assert overlay.mode == "RGBA" and overlay.size == (128, 128)  # the image's size, not the model's view
    only_report = analyse(tiny, open(dicom, "rb").read(), "CT_small.dcm", [], REPORT)
    assert "probabilities" not in only_report and only_report["maps"] and only_report["expert"] == result["expert"]
    asked = analyse(tiny, open(dicom, "rb").read(), "CT_small.dcm", [], REPORT, ["effusion", "pneumonia", " "])
    assert [m["label"] for m in asked["maps"]] == ["effusion", "pneumonia"]
    assert asked["maps_note"] == "read on its own (not in the report): pneumonia"
    prompt = analyse(tiny, open(dicom, "rb").read(), "CT_small.dcm", CLASSES)  # no report: the top class's prompt
    top = max(prompt["probabilities"], key=prompt["probabilities"].get)
    assert prompt["maps_of"] == f"the prompt '{top}'" and [m["label"] for m in prompt["maps"]] == [top]
    assert "report_expert" not in prompt


def test_map_overlay_covers_the_models_crop_of_the_image():
    grid = torch.zeros(4, 4)
    grid[0, 0] = 1.0  # the top-left region of the centre crop
    overlay = map_overlay(grid, (100, 200), size=64)  # a wide image: the crop is its middle 100 x 100
    assert overlay.shape == (100, 200, 4)
    assert (overlay[:, :50, 3] == 0).all() and (overlay[:, 150:, 3] == 0).all() and (overlay[:, 50:150, 3] > 0).all()
    peak = np.unravel_index(overlay[..., 3].argmax(), (100, 200))
    assert peak[0] < 25 and 50 <= peak[1] < 75
    big = map_overlay(grid, (3000, 2000), size=224)  # a radiograph: at most 1024 pixels on its longest side
    assert big.shape == (1024, 683, 4)


@pytest.mark.slow
def test_experts_named_by_modality_only_when_training_saw_modality_labels(tiny, dicom, tmp_path):
    from medmoe.cli import main
    from medmoe.data.synth import generate

    manifest = generate(tmp_path / "medsynth", n=24, seed=1, size=64, progress=False)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    unlabelled = manifest.parent / "unlabelled.jsonl"  # the same rows without the modality column
    unlabelled.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "modality"}) + "\n" for r in rows))
    for data, named in ((unlabelled, False), (manifest, True)):
        run = tmp_path / data.stem
        assert main(["train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--steps", "1",
                     "--batch-size", "4", "--eval-every", "100", "--quiet"]) == 0
        model = medmoe.load(run)
        assert trained_with_modalities(model) == named
        result = analyse(model, open(dicom, "rb").read(), "CT_small.dcm", CLASSES)
        assert [r["modalities"] for r in result["router"]] == (list(expert_modalities(model).values()) if named
                                                                else [[]] * model.config.num_experts)
    assert not trained_with_modalities(tiny)  # a model without its training run beside it


def test_bad_uploads_are_clear_errors(tiny, dicom, monkeypatch):
    whole = open(dicom, "rb").read()
    header = whole[:200]
    with pytest.raises(ImageLoadError, match="notes.txt: not a recognised image"):
        analyse(tiny, b"just some text", "notes.txt", CLASSES)
    with pytest.raises(ImageLoadError, match="broken.dcm: cannot decode image .*pixel data is less than expected"):
        analyse(tiny, whole[: len(whole) // 2], "broken.dcm", CLASSES)  # a DICOM cut off in its pixel data
    with pytest.raises(ImageLoadError, match="header.dcm: DICOM file has no pixel data"):
        analyse(tiny, header, "header.dcm", CLASSES)
    with pytest.raises(ConfigError, match="class names, a report, or words to map"):
        analyse(tiny, open(dicom, "rb").read(), "CT_small.dcm", ["", " "], "  ")
    monkeypatch.setattr(analyse_module, "MAX_UPLOAD", 1000)
    with pytest.raises(ImageLoadError, match="over the 0 MB upload limit"):
        analyse(tiny, header * 10, "big.dcm", CLASSES)


@pytest.fixture
def server(tiny):
    """The app on a free local port, health-checked before the test talks to it; shut down after."""
    app = AppServer(tiny, "127.0.0.1", 0)
    thread = threading.Thread(target=app.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{app.server_address[1]}"
    try:
        with urllib.request.urlopen(url + "/health", timeout=60) as response:
            assert json.load(response)["status"] == "ok"
        yield url
    finally:
        app.shutdown()
        app.server_close()
        thread.join(timeout=60)


def post(url, data: bytes, **query):
    request = urllib.request.Request(f"{url}/api/analyse?{urlencode(query)}", data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def png_declaring(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header declares ``width`` x ``height`` pixels."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_server_answers_bad_uploads_and_keeps_serving(server, dicom):
    status, body = post(server, b"\x00" * 300, name="noise.bin", classes="a,b")
    assert status == 400 and body["error"].startswith("noise.bin: ")
    status, body = post(server, png_declaring(40000, 40000), name="bomb.png", classes="a,b")  # 1.6 G pixels declared
    assert status == 400 and body["error"].startswith("bomb.png: ") and "refused before decoding" in body["error"]
    status, body = post(server, open(dicom, "rb").read(), name="CT_small.dcm", classes="pneumonia,normal")
    assert status == 200 and set(body["probabilities"]) == {"pneumonia", "normal"}
    with urllib.request.urlopen(server + "/", timeout=60) as response:
        page = response.read().decode()
    assert 'id="file"' in page and "http://" not in page and "https://" not in page  # no external assets


def browser_paths() -> tuple[str, str] | None:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser():
    paths = browser_paths()
    if paths is None:
        pytest.skip("no headless browser: chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--disable-extensions", "--window-size=1200,2000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=paths[1]))
    driver.set_page_load_timeout(180)
    try:
        yield driver
    finally:
        driver.quit()


def box(browser, element) -> dict:
    """The element's rendered box on the page: x, y, width, height in CSS pixels."""
    return browser.execute_script("return arguments[0].getBoundingClientRect().toJSON()", element)


def assert_bars_drawn(browser, container: str, expected: dict[str, float]) -> None:
    """The bars in ``container`` show ``expected``'s names in its order, each bar's fill drawn as wide
    as its probability of its track (within 2 px)."""
    from selenium.webdriver.common.by import By

    rows = browser.find_elements(By.CSS_SELECTOR, f"#{container} .row")
    names = [row.find_element(By.CSS_SELECTOR, ".name").text for row in rows]
    assert names == list(expected)
    for name, row in zip(names, rows):
        fill, track = (box(browser, row.find_element(By.CSS_SELECTOR, part)) for part in (".fill", ".track"))
        assert fill["height"] == pytest.approx(track["height"]) and track["width"] > 300
        assert fill["width"] == pytest.approx(expected[name] * track["width"], abs=2), (container, name, fill, track)


def most_probable_first(probabilities: dict[str, float]) -> dict[str, float]:
    return dict(sorted(probabilities.items(), key=lambda item: -item[1]))


def routing_text(result: dict) -> str:
    """What the page says about the report router's choice beside the image router's."""
    if result["report_expert"] == result["expert"]:
        return f"The report router agrees: expert {result['expert']}."
    return (f"The image and report routers disagree: the report router chose expert {result['report_expert']}, "
            "whose word maps are shown.")


def assert_maps_drawn(browser, expected: dict) -> None:
    """The word maps as the page shows them: one button per mapped word, the first pressed, its overlay
    laid exactly over the image (the same rendered box, at least 256 px wide), a caption with its peak;
    a click on the last word shows its map instead."""
    from selenium.webdriver.common.by import By

    maps = expected["maps"]
    buttons = browser.find_elements(By.CSS_SELECTOR, "#map-words button")
    assert [b.text for b in buttons] == [m["label"] for m in maps]
    assert [b.get_attribute("aria-pressed") for b in buttons] == ["true"] + ["false"] * (len(maps) - 1)
    image, overlay = (browser.find_element(By.ID, i) for i in ("map-image", "map-overlay"))
    under, over = box(browser, image), box(browser, overlay)
    assert under["width"] >= 256 and under["width"] == pytest.approx(box(browser, browser.find_element(By.ID, "image"))["width"])
    assert all(over[k] == pytest.approx(under[k], abs=0.5) for k in ("x", "y", "width", "height")), (under, over)
    caption = browser.find_element(By.ID, "map-caption")
    assert caption.text.startswith(f"{maps[0]['label']}: highest attention {maps[0]['peak']:.4f} (a uniform map: ")
    buttons[-1].click()
    assert caption.text.startswith(f"{maps[-1]['label']}: highest attention {maps[-1]['peak']:.4f}")
    assert buttons[-1].get_attribute("aria-pressed") == "true"
    assert overlay.get_attribute("src").endswith(maps[-1]["overlay"])


def submit(browser, path) -> str:
    """Choose ``path``, click Analyse and wait until the page shows the results or an error (the click
    hides the last results and sets a "busy" message at once); returns the message, "" with results."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element(By.ID, "file").send_keys(str(path))
    browser.find_element(By.ID, "analyse").click()
    message = browser.find_element(By.ID, "message")
    WebDriverWait(browser, 300).until(lambda d: d.find_element(By.ID, "results").is_displayed()
                                      or message.get_attribute("class") == "error")
    return message.text


@pytest.mark.slow
def test_page_in_a_headless_browser(tiny, server, browser, small_mr, dicom, tmp_path):
    """What a user sees: bars as wide as the probabilities, the 64-pixel MR image upscaled (no smoothing)
    to the attention figure's width, the experts by number (the tiny model never saw a modality label),
    and whether the image and report routers agree."""
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.ID, "classes").send_keys(", ".join(CLASSES))
    browser.find_element(By.ID, "report").send_keys(REPORT)
    browser.find_element(By.ID, "words").send_keys("nodule, right lung, pneumonia")
    assert submit(browser, small_mr) == ""
    WebDriverWait(browser, 300).until(lambda d: d.execute_script(
        "return ['image', 'map-image', 'map-overlay'].every((id) => document.getElementById(id).naturalWidth > 0)"))
    expected = analyse(tiny, open(small_mr, "rb").read(), "MR_small.dcm", CLASSES, REPORT,
                       ["nodule", "right lung", "pneumonia"])
    assert expected["size"] == [64, 64] and expected["report_expert"] != expected["expert"], \
        "MR_small with REPORT no longer exercises disagreeing routers: pick another report"
    probabilities = expected["probabilities"]
    assert browser.find_element(By.ID, "probability-source").text == "Probabilities from prompts (zero-shot)."
    assert browser.find_element(By.ID, "top-class").text == max(probabilities, key=probabilities.get)
    assert_bars_drawn(browser, "bars", most_probable_first(probabilities))
    assert_bars_drawn(browser, "router", {f"expert {r['expert']}": r["probability"] for r in expected["router"]})
    assert browser.find_element(By.ID, "expert").text == f"expert {expected['expert']}"
    assert browser.find_element(By.ID, "report-routing").text == routing_text(expected)
    assert browser.find_element(By.ID, "maps-of").text == ("The attention of words of the report over the image "
                                                            "(read on its own (not in the report): pneumonia).")
    assert_maps_drawn(browser, expected)
    image = browser.find_element(By.ID, "image")
    assert box(browser, image)["width"] >= 256
    for shown in (image, browser.find_element(By.ID, "map-image")):
        assert shown.value_of_css_property("image-rendering") == "pixelated"

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    assert "not a recognised image" in submit(browser, bad)
    assert not browser.find_element(By.ID, "results").is_displayed()

    assert submit(browser, dicom) == ""  # the server keeps serving
    expected = analyse(tiny, open(dicom, "rb").read(), "CT_small.dcm", CLASSES, REPORT)
    assert browser.find_element(By.ID, "report-routing").text == routing_text(expected)
    assert_bars_drawn(browser, "bars", most_probable_first(expected["probabilities"]))

    large = tmp_path / "large.png"  # wider than the page: scaled down smoothly
    Image.new("L", (2000, 1000), 128).save(large)
    browser.find_element(By.ID, "report").clear()
    browser.find_element(By.ID, "words").clear()
    assert submit(browser, large) == ""
    assert browser.find_element(By.ID, "report-routing").text == ""
    assert box(browser, image)["width"] < 2000 and image.value_of_css_property("image-rendering") == "auto"
    expected = analyse(tiny, large.read_bytes(), "large.png", CLASSES)  # no report: the most probable class
    top = max(expected["probabilities"], key=expected["probabilities"].get)
    assert browser.find_element(By.ID, "maps-of").text == f"The attention of words of the prompt '{top}' over the image."
    assert_maps_drawn(browser, expected)  # the overlay spans the whole wide image, its map the centre crop


@pytest.fixture(scope="module")
def tuned(tiny):
    """``tiny`` with a random head over three classes (what ``medmoe finetune`` leaves, untrained)."""
    import copy

    import torch

    from medmoe.train.finetune import attach_head

    model = attach_head(copy.deepcopy(tiny), ["effusion", "nodule", "normal"], False, "global")
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(2)))
    return model


def test_a_fine_tuned_model_needs_no_class_names(tiny, tuned, dicom):
    from medmoe.classify import HeadClassifier

    data = open(dicom, "rb").read()
    result = analyse(tuned, data, "CT_small.dcm", [""])
    expected = HeadClassifier(tuned)([dicom])
    assert result["probability_source"] == "head" and not result["multi_label"]
    assert list(result["probabilities"]) == ["effusion", "nodule", "normal"]
    assert list(result["probabilities"].values()) == pytest.approx(expected.probabilities[0].tolist(), abs=1e-6)
    typed = analyse(tuned, data, "CT_small.dcm", CLASSES)  # class names typed: zero-shot from their prompts
    assert typed["probability_source"] == "prompts" and list(typed["probabilities"]) == CLASSES
    assert analyse(tiny, data, "CT_small.dcm", CLASSES)["probability_source"] == "prompts"


@pytest.mark.slow
def test_page_says_where_the_probabilities_come_from(tiny, tuned, browser, dicom):
    from selenium.webdriver.common.by import By

    for model, classes, says in ((tuned, "", "Probabilities from the trained head (fine-tuned on 3 classes)."),
                                 (tiny, ", ".join(CLASSES), "Probabilities from prompts (zero-shot).")):
        app = AppServer(model, "127.0.0.1", 0)
        thread = threading.Thread(target=app.serve_forever, daemon=True)
        thread.start()
        try:
            browser.get(f"http://127.0.0.1:{app.server_address[1]}/")
            browser.find_element(By.ID, "classes").send_keys(classes)
            assert submit(browser, dicom) == ""
            assert browser.find_element(By.ID, "probability-source").text == says
            expected = analyse(model, open(dicom, "rb").read(), "CT_small.dcm", classes.split(","))
            assert_bars_drawn(browser, "bars", most_probable_first(expected["probabilities"]))
        finally:
            app.shutdown()
            app.server_close()
            thread.join(timeout=60)
