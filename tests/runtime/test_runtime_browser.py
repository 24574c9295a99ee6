"""The door's page in a real browser: Debian's chromium driven by Selenium through Debian's chromedriver.

A door runs on a looping folder of images with a log relay; the browser, at a phone's width, checks that the
state, the timeline and the snapshots appear, relabels a snapshot (the file lands in the label folder), and
shows "offline" once the server is stopped while the door loop keeps deciding. Screenshots go to
test-artifacts/door-page/ (gitignored); the test prints the folder.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from runtime_support import running_door

TOKEN = "correct horse battery staple"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "door-page"


def _driver(width: int, height: int):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if chromium is None or not Path(driver_path).exists():
        pytest.skip("chromium or chromedriver is not installed (.ci/run installs Debian's chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}", "--no-proxy-server"):  # fmt: skip
        options.add_argument(flag)
    # An explicit driver: selenium-manager never looks for (or downloads) one.
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)


def test_door_page_in_chromium(tmp_path, export_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {ARTIFACTS}")
    driver = _driver(412, 1900)  # a phone's CSS width
    wait = WebDriverWait(driver, 15, poll_frequency=0.1)
    try:
        with running_door(tmp_path, export_dir, TOKEN, snapshot_every=0.3) as (live, loop):
            driver.get(live.url + "/")
            wait.until(lambda d: d.find_element(By.ID, "connection").text == "online")
            wait.until(lambda d: d.find_element(By.ID, "state").text in ("locked", "open"))
            facts = driver.find_element(By.ID, "facts").text
            assert "tiny (model.onnx)" in facts and "2 of the last 3 frames" in facts
            wait.until(lambda d: "OPENED" in d.find_element(By.ID, "timeline").text)
            assert driver.find_element(By.ID, "snapshots").text == ""  # no token, no faces

            driver.find_element(By.ID, "token").send_keys(TOKEN)
            driver.find_element(By.ID, "use-token").click()
            wait.until(lambda d: (d.find_element(By.ID, "live").get_attribute("src") or "").startswith("blob:"))
            wait.until(lambda d: d.execute_script("return document.getElementById('live').naturalWidth") == 320)
            cards = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".snap.opened"))
            wait.until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('.snap img')].every(i => i.complete && i.naturalWidth > 0)"))
            driver.save_screenshot(str(ARTIFACTS / "1-page-phone.png"))

            name = cards[0].get_attribute("data-name")
            cards[0].find_element(By.CSS_SELECTOR, "button[data-label='no_smile']").click()
            wait.until(lambda d: "labelled no_smile" in d.find_element(By.ID, "review-message").text)
            assert (loop.snapshots.labelled / "no_smile" / name).is_file()
            assert not driver.find_elements(By.CSS_SELECTOR, f".snap[data-name='{name}']")
            driver.execute_script("document.getElementById('review-message').scrollIntoView()")
            driver.save_screenshot(str(ARTIFACTS / "2-relabelled.png"))

            driver.set_window_size(1200, 1100)
            driver.get(live.url + "/docs")
            wait.until(lambda d: "toolkit door" in d.find_element(By.CSS_SELECTOR, ".swagger-ui .title").text)
            driver.save_screenshot(str(ARTIFACTS / "4-docs-offline.png"))
            driver.get(live.url + "/")
            wait.until(lambda d: d.find_element(By.ID, "connection").text == "online")

            frames = loop.frames
            live.__exit__(None, None, None)  # the server stops; the door loop goes on
            wait.until(lambda d: d.find_element(By.ID, "connection").text == "offline")
            assert driver.find_element(By.ID, "state").text == "offline"
            driver.save_screenshot(str(ARTIFACTS / "3-offline.png"))
            time.sleep(0.3)
            assert loop.frames > frames  # the door keeps deciding without its page
    finally:
        driver.quit()


def test_serve_without_a_door_shows_no_unlock_and_no_camera(export_dir):
    """Issue 23, defect 10: 'door serve' (no camera, no relay) showed an Unlock button and "Enter the token to
    see the camera"; the page now shows only what exists."""
    from runtime_support import LiveServer
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from toolkit.runtime.core.config import ModelConfig, ServeConfig
    from toolkit.runtime.core.holder import ModelHolder
    from toolkit.runtime.server import create_app

    driver = _driver(412, 1200)
    wait = WebDriverWait(driver, 15, poll_frequency=0.1)
    try:
        app = create_app(ModelHolder(ModelConfig(export_dir)), ServeConfig(), door=None, token=TOKEN)
        with LiveServer(app) as live:
            driver.get(live.url + "/")
            wait.until(lambda d: d.find_element(By.ID, "state").text == "no door")
            wait.until(lambda d: not d.find_element(By.ID, "live-card").is_displayed())
            for hidden in ("unlock", "live-card", "review-card", "token-card"):
                assert not driver.find_element(By.ID, hidden).is_displayed(), hidden
            assert "Enter the token" not in driver.find_element(By.TAG_NAME, "body").text
            assert "tiny (model.onnx)" in driver.find_element(By.ID, "facts").text  # what exists still shows
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "5-serve-only.png"))
    finally:
        driver.quit()
