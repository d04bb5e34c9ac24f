"""`medmoe app`: what the page shows for an upload, the server under bad uploads, and the page in a
real headless browser (Debian's chromium + chromium-driver through selenium)."""
import json
import shutil
import threading
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

from medmoe.app import analyse as analyse_module
from medmoe.app.analyse import analyse
from medmoe.app.server import AppServer
from medmoe.errors import ConfigError, ImageLoadError

CLASSES = ["pneumonia", "normal", "fracture"]
REPORT = "Small nodule in the right lung, no effusion."


@pytest.fixture(scope="module")
def dicom():
    from pydicom.data import get_testdata_file

    return get_testdata_file("CT_small.dcm")


def test_analyse_shows_probabilities_routing_and_attention(tiny, dicom):
    result = analyse(tiny, open(dicom, "rb").read(), "CT_small.dcm", CLASSES + [" "], REPORT)
    expected = tiny.classify([dicom], CLASSES)
    assert list(result["probabilities"]) == CLASSES
    assert result["probabilities"]["fracture"] == pytest.approx(float(expected.probabilities[0, 2]), abs=1e-6)
    assert result["expert"] == int(expected.expert[0])
    assert [r["probability"] for r in result["router"]] == pytest.approx(expected.router_probabilities[0].tolist())
    assert result["router"][1]["modalities"] == ["ct"]
    assert result["size"] == [128, 128]  # CT_small is 128 x 128: shown as loaded (windowed), not the model's view
    import base64

    assert base64.b64decode(result["image"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert base64.b64decode(result["attention"])[:8] == b"\x89PNG\r\n\x1a\n" and result["report_expert"] in range(4)
    only_report = analyse(tiny, open(dicom, "rb").read(), "CT_small.dcm", [], REPORT)
    assert "probabilities" not in only_report and "attention" in only_report and only_report["expert"] == result["expert"]


def test_bad_uploads_are_clear_errors(tiny, dicom, monkeypatch):
    whole = open(dicom, "rb").read()
    header = whole[:200]
    with pytest.raises(ImageLoadError, match="notes.txt: not a recognised image"):
        analyse(tiny, b"just some text", "notes.txt", CLASSES)
    with pytest.raises(ImageLoadError, match="broken.dcm: cannot decode image .*pixel data is less than expected"):
        analyse(tiny, whole[: len(whole) // 2], "broken.dcm", CLASSES)  # a DICOM cut off in its pixel data
    with pytest.raises(ImageLoadError, match="header.dcm: DICOM file has no pixel data"):
        analyse(tiny, header, "header.dcm", CLASSES)
    with pytest.raises(ConfigError, match="class names, a report"):
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


def test_server_answers_bad_uploads_and_keeps_serving(server, dicom):
    status, body = post(server, b"\x00" * 300, name="noise.bin", classes="a,b")
    assert status == 400 and body["error"].startswith("noise.bin: ")
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


@pytest.mark.slow
def test_page_in_a_headless_browser(tiny, server, browser, dicom, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 300)
    browser.get(server + "/")
    browser.find_element(By.ID, "file").send_keys(dicom)
    browser.find_element(By.ID, "classes").send_keys(", ".join(CLASSES))
    browser.find_element(By.ID, "report").send_keys(REPORT)
    browser.find_element(By.ID, "analyse").click()
    wait.until(ready.visibility_of_element_located((By.ID, "attention")))
    assert browser.find_element(By.ID, "top-class").text == tiny.classify([dicom], CLASSES).top()[0]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars .row")) == 3
    assert len(browser.find_elements(By.CSS_SELECTOR, "#router .row.routed")) == 1
    wait.until(lambda d: d.execute_script("const i = document.getElementById('attention');"
                                          "return i.complete && i.naturalWidth > 0"))

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    browser.find_element(By.ID, "analyse").click()
    wait.until(lambda d: "not a recognised image" in d.find_element(By.ID, "message").text)
    assert not browser.find_element(By.ID, "results").is_displayed()
    browser.find_element(By.ID, "file").send_keys(dicom)  # the server keeps serving
    browser.find_element(By.ID, "analyse").click()
    wait.until(ready.visibility_of_element_located((By.ID, "top-class")))
    assert browser.find_element(By.ID, "top-class").text in CLASSES
