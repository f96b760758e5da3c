"""The live card in a real browser: Debian's chromium with fake capture devices playing a generated smiling-face clip
with happy speech (``--use-file-for-fake-video-capture`` / ``--use-file-for-fake-audio-capture``), streamed through
the page to a real uvicorn server on 127.0.0.1. The page must show hops as they come (label, bars, timeline,
transcript, face box, latency, dropped frames) and end on "happy". Screenshots are kept under the test's tmp dir and
copied to ``$EMOLLM_TEST_ARTIFACTS`` when set (the same setup as ``test_browser.py``)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from emollm.apps.serve.app import create_app
from emollm.apps.serve.settings import ServeSettings
from emollm.media import fixtures

from .conftest import LABELS, serve_in_thread
from .test_browser import CHROMEDRIVER, CHROMIUM, _keep, pytestmark

WAIT_S = 240  # warm-up (the models load on the first session) + a few hops on a loaded 2-core machine
pytestmark = [  # noqa: F811 - the browser test's skip marker, plus these needs
    pytestmark,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (apt-get install ffmpeg)"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)"),
]


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """The fake camera and microphone: a 6 s smiling face saying happy things, as y4m video and 16 kHz wav."""
    root = tmp_path_factory.mktemp("fake-devices")
    clip = root / "happy.mp4"
    fixtures.make_face_clip(clip, "astronaut", seconds=6.0, size=(320, 240),
                            text="I passed the exam, this is wonderful news! I am so happy today.")  # fmt: skip
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", clip, "-pix_fmt", "yuv420p", root / "v.y4m"], **run)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", clip, "-ac", "1", "-ar", "16000", root / "a.wav"], **run
    )
    return root / "v.y4m", root / "a.wav"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from emollm.apps.clue_mode import ClueAnalyzer, ClueSettings

    app = create_app(
        ServeSettings(labels=LABELS, tmp_dir=str(tmp_path_factory.mktemp("up"))),
        [ClueAnalyzer(LABELS, ClueSettings(reasoning="template"))],
    )
    with serve_in_thread(app) as where:
        yield f"http://{where}"


@pytest.fixture(scope="module")
def browser(capture):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the serve extra's tests)")
    from selenium.webdriver.chrome.service import Service

    video, audio = capture
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,2300",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={video}", f"--use-file-for-fake-audio-capture={audio}",
                "--autoplay-policy=no-user-gesture-required", "--no-first-run", "--disable-background-networking",
                "--disable-component-update"):  # fmt: skip
        options.add_argument(arg)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")
        env.setenv("SE_AVOID_BROWSER_DOWNLOAD", "true")
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_live_page_streams_the_camera_and_microphone_and_ends_on_happy(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    text = lambda i: browser.find_element(By.ID, i).text  # noqa: E731
    browser.get(server + "/")
    browser.find_element(By.ID, "live-start").click()
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda d: int(text("live-hops") or 0) >= 3 or text("live-error"))
    assert not text("live-error"), text("live-error")
    # Updates as they come: the rolling bars, the timeline growing, the transcript, the face box, the numbers.
    assert text("live-label") in LABELS and "Live: 3 s windows" in text("live-status")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#live-bars svg rect.bar")) == len(LABELS)
    assert re.fullmatch(r"\d+ / \d+ / \d+ ms", text("live-latency")), text("live-latency")
    assert re.fullmatch(r"\d+ / \d+( \(\d+ %\))?", text("live-dropped")), text("live-dropped")
    hops = browser.execute_script("return LIVE.entries.length")
    box = browser.execute_script("const e = LIVE.entries.at(-1).evidence; return e.face ? e.face.face_box : null")
    assert box is not None and 0 <= box[0] < box[2] <= 320 and 0 <= box[1] < box[3] <= 240, box
    browser.find_element(By.ID, "live-card").location_once_scrolled_into_view  # noqa: B018 - scrolls
    _keep(browser, tmp_path, "serve_live_running.png")

    wait.until(lambda d: int(text("live-hops") or 0) >= hops + 2)  # still coming
    browser.find_element(By.ID, "live-stop").click()
    wait.until(lambda d: text("live-summary") or text("live-error"))
    assert text("live-summary").startswith("Session: happy over"), text("live-summary")
    assert text("live-label") == "happy"
    answered = browser.execute_script("return LIVE.entries.length")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#live-timeline svg polyline")) == len(LABELS)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#live-timeline svg rect.band")) == answered
    said = text("live-words").lower()
    assert any(w in said for w in ("passed", "exam", "wonderful", "happy")), said
    saved = browser.execute_script("return LIVE.summary.timeline")
    assert saved["source"] == "stream" and len(saved["entries"]) == answered and saved["labels"] == list(LABELS)
    assert browser.find_element(By.ID, "live-download").is_enabled()
    _keep(browser, tmp_path, "serve_live_result.png")
