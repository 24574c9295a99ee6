"""The page's adapt card in chromium: counts per label appear with the token, "Adapt to this camera" makes version
v1 (marked as serving in the versions list) and "Roll back" returns to the export's head. A screenshot of the card
goes to test-artifacts/door-page/adapt-card.png."""

from __future__ import annotations

from pathlib import Path

from adapt_support import write_labelled
from test_runtime_adapt_door import TOKEN, door  # noqa: F401 (the fixture)
from test_runtime_browser import ARTIFACTS, _driver

LABELS = ("no_smile", "smile")


def click(driver, element_id: str) -> None:
    """A click by script: the review card's snapshots load meanwhile and move the layout under a pointer click."""
    driver.execute_script(f"document.getElementById('{element_id}').click()")


def test_adapt_card_in_chromium(door):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    live, loop = door
    write_labelled(loop.snapshots.labelled, LABELS, 12, cast=90.0)
    driver = _driver(412, 2400)
    wait = WebDriverWait(driver, 30, poll_frequency=0.1)
    try:
        driver.get(live.url + "/")
        wait.until(lambda d: d.find_element(By.ID, "connection").text == "online")
        assert "Enter the token" in driver.find_element(By.ID, "adapt-message").text
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "use-token").click()
        wait.until(lambda d: "smile: 12 labelled" in d.find_element(By.ID, "adapt-labelled").text)
        assert "export's own head" in driver.find_element(By.ID, "adapt-message").text
        # before anyone presses "Adapt", the card estimates it on the labelled photos (a dry run, nothing written)
        wait.until(lambda d: "Estimate on the 24 labelled photos" in d.find_element(By.ID, "adapt-estimate").text)
        wait.until(lambda d: d.find_element(By.ID, "adapt-button").is_enabled())
        assert "No version yet" in driver.find_element(By.ID, "adapt-estimate").text
        click(driver, "adapt-button")
        wait.until(lambda d: "v1 ✓" in d.find_element(By.ID, "adapt-versions").text)
        assert "Serving: version v1" in driver.find_element(By.ID, "adapt-message").text
        assert "adapted" in driver.find_element(By.ID, "adapt-job").text
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#adapt-labelled img')].every(i => i.naturalWidth > 0)"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = Path(ARTIFACTS) / "adapt-card.png"
        driver.find_element(By.ID, "adapt-card").screenshot(str(shot))
        print(f"\nscreenshot: {shot}")
        click(driver, "adapt-rollback")
        wait.until(lambda d: "export's own head" in d.find_element(By.ID, "adapt-message").text)
        assert loop.holder.predictor.version is None
    finally:
        driver.quit()
