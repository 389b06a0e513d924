"""In a real browser (headless Chromium): the MLflow UI shows the small study's runs, and the
report page renders every architecture's row and every image. CI installs Debian's chromium and
chromium-driver; without them these tests are skipped, saying so (under CI=true: they fail)."""

import json
import time
import urllib.request

import pytest

from afternoon.tracking.uris import RUNS_TABLE_QUERY, study_ui_url
from helpers.browser import chromium, screenshot
from helpers.components import needs_browser
from helpers.services import mlflow_server, search_runs, wait_for

pytestmark = [pytest.mark.browser, needs_browser]
RUN_NAMES = ["cnn1@digits", "fc64@digits"]


def test_mlflow_ui_shows_the_experiment_and_its_runs(small_study, tmp_path):
    tracking = json.loads((small_study / "results/mlflow/tracking.json").read_text())
    db = small_study / "results/mlflow/mlflow.db"
    with mlflow_server(db, tmp_path) as url:
        runs = search_runs(url, tracking["experiment_id"])
        assert sorted(run["info"]["run_name"] for run in runs) == RUN_NAMES
        for run in runs:
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert {"accuracy", "val_loss", "test_accuracy", "parameters"} <= set(metrics)
            assert 0.0 < metrics["test_accuracy"] <= 1.0
        # MLflow 3 opens an experiment in its GenAI view: the study's experiment says it is an ML
        # one, and the address `make mlflow-ui` prints opens its runs table.
        query = f"experiment_id={tracking['experiment_id']}"
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get?{query}") as response:
            tags = json.load(response)["experiment"].get("tags", [])
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in tags
        page = study_ui_url(url, small_study / "results/mlflow/tracking.json")
        assert page == f"{url}/#/experiments/{tracking['experiment_id']}/runs{RUNS_TABLE_QUERY}"
        with chromium() as driver:
            driver.get(page)
            body = driver.find_element("tag name", "body")
            text = wait_for(
                lambda: all(name in body.text for name in RUN_NAMES) and body.text,
                timeout=30,
                what="the run names in the MLflow UI",
            )
            assert tracking["experiment"] in text
            # the runs table (its columns), not the GenAI view's traces
            assert "Run Name" in text and "No traces" not in text
            time.sleep(1)  # let the table finish laying out before the picture
            assert screenshot(driver, tmp_path / "mlflow-ui.png").stat().st_size > 10_000


def test_report_page_renders_every_row_and_image(small_study, tmp_path):
    page = small_study / "results/report/index.html"
    with chromium() as driver:
        driver.get(page.as_uri())
        rows = driver.find_elements("css selector", "#score-table tr.score-row")
        assert [row.get_attribute("data-arch") for row in rows] == ["fc64", "cnn1"]
        assert all(row.find_element("css selector", "td.arch").is_displayed() for row in rows)
        assert "The Score Thus Far" in driver.title
        driver.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
        loaded = wait_for(
            lambda: driver.execute_script(
                "const imgs = [...document.images];"
                "return imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0)"
                " && imgs.length"
            ),
            timeout=10,
            what="every image of the report loaded",
        )
        # three figures (learning curves, overfitting, accuracy against cost), two images per run
        assert loaded == 3 + 2 * len(rows)
        assert screenshot(driver, tmp_path / "report.png").stat().st_size > 10_000
