"""Screenshots for the docs: the study report and the MLflow UI of a finished study.

    .venv/bin/python docs/screenshots.py [RESULTS_DIR] [--out-dir docs]

RESULTS_DIR (default: results) must hold report/index.html and mlflow/{mlflow.db,tracking.json}.
Needs Debian's chromium and chromium-driver and the selenium package (as the browser tests do);
the MLflow server runs on 127.0.0.1 only and is stopped afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.browser import chromium, missing_browser, screenshot  # noqa: E402
from helpers.services import mlflow_server, wait_for  # noqa: E402


def report_screenshot(results: Path, target: Path) -> Path:
    """The top of the report: title, score table, learning curves."""
    with chromium(1400, 1000) as driver:
        driver.get((results / "report/index.html").resolve().as_uri())
        return screenshot(driver, target, max_height=1500)


def mlflow_screenshot(results: Path, target: Path) -> Path:
    """The experiment's runs with their accuracy charts (MLflow's "Model training" view)."""
    tracking = json.loads((results / "mlflow/tracking.json").read_text())
    runs_page = f"#/experiments/{tracking['experiment_id']}/runs"
    with tempfile.TemporaryDirectory() as tmp:
        with mlflow_server((results / "mlflow/mlflow.db").resolve(), Path(tmp)) as url:
            with chromium(1600, 1000) as driver:
                driver.get(f"{url}/{runs_page}?workflowType=machine_learning&compareRunsMode=CHART")
                body = driver.find_element("tag name", "body")
                wait_for(lambda: "@" in body.text, 60, "the runs in the MLflow UI")
                time.sleep(2)
                for button in driver.find_elements("css selector", "button[aria-label=Close]"):
                    button.click()  # the "MLflow Assistant" side panel
                search = "input[placeholder='Search metric charts']"
                for box in driver.find_elements("css selector", search):
                    box.send_keys("accuracy")
                time.sleep(3)  # charts redraw
                return screenshot(driver, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results", type=Path)
    parser.add_argument("--out-dir", default=Path(__file__).parent, type=Path)
    args = parser.parse_args(argv)
    if reason := missing_browser():
        print(f"screenshots: {reason}", file=sys.stderr)
        return 1
    print(report_screenshot(args.results, args.out_dir / "report.png"))
    print(mlflow_screenshot(args.results, args.out_dir / "mlflow-ui.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
