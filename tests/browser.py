"""Helpers for the browser tests and docs/screenshots.py: headless Chromium through Selenium (with
Debian's chromium + chromium-driver; Selenium Manager is never asked to download anything), an
MLflow server on 127.0.0.1, and a small finished pipeline shared by every test in the session."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STUDY = "browser-test"
ARCHS = ["fc64", "cnn1"]
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


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what``."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if value := condition():
                return value
            last = value
        time.sleep(interval)
    raise TimeoutError(f"{what} not within {timeout:.0f} s (last: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(db: Path, workdir: Path, timeout: float = 90):
    """``mlflow server`` on the sqlite store ``db`` at 127.0.0.1:<free port>; yields its URL.

    It runs in its own session, so stopping it signals exactly the processes this call started
    (the server and its uvicorn worker), by that process group's id."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(workdir / "mlflow-server.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy():
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}")
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200

        try:
            wait_for(healthy, timeout, f"mlflow server on {url}/health")
        except TimeoutError as err:
            tail = (workdir / "mlflow-server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{err}\n{tail}") from None
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def snakemake(workdir: Path, *args: str) -> str:
    """Run the repository's Snakefile in ``workdir``; the jobs find this venv's `python`."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    command += ["--directory", str(workdir), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def write_study(workdir: Path, archs=ARCHS, max_epochs: int = 2) -> Path:
    """A small study config (digits, ``archs``, at most ``max_epochs``) in ``workdir``/config."""
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config/zoo.yaml", workdir / "config/zoo.yaml")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config.update(study=STUDY, datasets=["digits"], architectures=list(archs))
    config["training"]["max_epochs"] = max_epochs
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


_FINISHED: dict[str, Path] = {}


def finished_study(tmp_path_factory) -> Path:
    """The small study run once per test session (any module that asks gets the same one)."""
    if "study" not in _FINISHED:
        workdir = write_study(tmp_path_factory.mktemp("small-study"))
        snakemake(workdir, "--cores", "2")
        _FINISHED["study"] = workdir
    return _FINISHED["study"]
