"""Headless Chromium through Selenium for the browser tests and docs/screenshots.py: Debian's
chromium + chromium-driver (Selenium Manager is never asked to download anything).

    with chromium() as driver:          # a fresh profile in a temporary directory
        driver.get(url)
        screenshot(driver, tmp_path / "page.png")

A test that needs the browser is marked ``@needs_browser`` (helpers.components): without chromium,
chromium-driver or selenium it skips, saying which (under CI=true: fails).
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile
from pathlib import Path

from helpers.services import wait_for  # noqa: F401 (the browser tests poll pages with it)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm
    "--hide-scrollbars",
]


def chromium_binaries() -> tuple[str | None, str | None]:
    """(browser, driver): Debian's chromium and chromium-driver, or None where missing."""
    names = ("chromium", "chromium-browser", "google-chrome")
    browser = next((path for name in names if (path := shutil.which(name))), None)
    return browser, shutil.which("chromedriver")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    browser, driver = chromium_binaries()
    missing = [
        what for what, path in (("chromium", browser), ("chromium-driver", driver)) if not path
    ]
    if missing:
        return f"needs {' and '.join(missing)} (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs the selenium Python package"
    return None


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver with a fresh profile in a temporary directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_binaries()
    with tempfile.TemporaryDirectory(prefix="afternoon-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in [
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
        ]:
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        try:
            yield driver
        finally:
            driver.quit()


def screenshot(driver, path: Path, max_height: int | None = None) -> Path:
    """A PNG of the page, beyond the window down to ``max_height`` pixels (None: all of it)."""
    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    clip = dict(x=0, y=0, width=width, height=min(height, max_height or height), scale=1)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
