"""The web page in a real browser: Debian's chromium + chromedriver driven by selenium, against a real uvicorn
server on 127.0.0.1. Skipped (with the reason) where chromium, chromedriver or selenium are missing; CI installs
them (Makefile ``system-deps``). The screenshot is kept under the test's tmp dir and copied to
``$EMOLLM_TEST_ARTIFACTS`` when set."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'emollm[serve]')")

from emollm.apps.serve.app import create_app  # noqa: E402
from emollm.apps.serve.settings import ServeSettings  # noqa: E402

from .conftest import LABELS, assert_no_uploads_left  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), "/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not (os.access(CHROMEDRIVER, os.X_OK) and os.access(CHROMIUM, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; make system-deps)",
)
WAIT_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real uvicorn server in a thread, with the fast clue analyzer; stopped (bounded) after the module."""
    uvicorn = pytest.importorskip("uvicorn")
    from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings

    app = create_app(
        ServeSettings(labels=LABELS, tmp_dir=str(tmp_path_factory.mktemp("up"))),
        [ClueAnalyzer(LABELS, ClueSettings(frames=6, reasoning="template"))],
    )
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield app, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(15)
    assert not thread.is_alive(), "uvicorn did not stop"


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the serve extra's tests)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,1900", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                "--no-first-run", "--disable-background-networking", "--disable-component-update"):  # fmt: skip
        options.add_argument(arg)
    with pytest.MonkeyPatch.context() as env:
        # Driver and browser are given, so selenium-manager has nothing to look up; offline, it must not try.
        env.setenv("SE_OFFLINE", "true")
        env.setenv("SE_AVOID_BROWSER_DOWNLOAD", "true")
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _keep(driver, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    if os.environ.get("EMOLLM_TEST_ARTIFACTS"):
        out = Path(os.environ["EMOLLM_TEST_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / name)
    return shot


def test_page_uploads_a_clip_and_shows_the_result(server, browser, media, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    app, url = server
    browser.get(url + "/")
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda d: "Limits:" in d.find_element(By.ID, "limits").text)
    assert browser.find_element(By.ID, "record-controls").is_displayed()  # MediaRecorder offered (fake camera)
    browser.find_element(By.ID, "file").send_keys(str(media / "happy.mp4"))
    wait.until(ec.element_to_be_clickable((By.ID, "analyze"))).click()
    wait.until(lambda d: d.find_element(By.ID, "result-label").text.strip())
    assert browser.find_element(By.ID, "result-label").text == "happy"
    bars = browser.find_elements(By.CSS_SELECTOR, "#prob-chart svg rect.bar")
    assert [b.get_attribute("data-label") for b in bars] == list(LABELS)
    top = browser.find_element(By.CSS_SELECTOR, "#prob-chart rect.bar.top")
    assert top.get_attribute("data-label") == "happy" and top.size["width"] > 0
    assert browser.find_element(By.ID, "reasoning-source").text == "template (asked)"
    assert "AU12" in browser.find_element(By.ID, "aus").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#expr-chart polyline")) == 7
    assert "no audio track" in browser.find_element(By.ID, "missing").text
    assert browser.find_element(By.ID, "notes-section").get_attribute("hidden") is not None  # nothing was cut
    assert "clues mode" in browser.find_element(By.ID, "result-produced-by").text
    wait.until(lambda d: "peak frame" in d.find_element(By.ID, "peak-caption").text)
    time.sleep(0.5)  # the peak frame is drawn after the video element seeks (or says it cannot decode it)
    _keep(browser, tmp_path, "serve_page_result.png")
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None

    browser.find_element(By.ID, "file").send_keys(str(media / "garbage.mp4"))  # errors show on the page
    browser.find_element(By.ID, "analyze").click()
    wait.until(lambda d: d.find_element(By.ID, "error").text)
    error = browser.find_element(By.ID, "error").text
    assert error.startswith("400 The server could not use this file: garbage.mp4: ")
    _keep(browser, tmp_path, "serve_page_error.png")
    assert_no_uploads_left(app)


def test_docs_pages_render_offline(server, browser, tmp_path):
    """Swagger UI and ReDoc come from local files (fastapi-offline), so both pages render with no network."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, url = server
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url + "/docs")
    wait.until(lambda d: "emollm" in d.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path[data-path='/v1/analyze']"))
    _keep(browser, tmp_path, "serve_docs.png")
    browser.get(url + "/redoc")
    wait.until(lambda d: "emollm" in " ".join(h.text for h in d.find_elements(By.TAG_NAME, "h1")))
    assert "/v1/analyze" in browser.find_element(By.TAG_NAME, "body").text
    scripts = [s.get_attribute("src") for s in browser.find_elements(By.TAG_NAME, "script") if s.get_attribute("src")]
    assert scripts and all(s.startswith(url) for s in scripts), scripts
