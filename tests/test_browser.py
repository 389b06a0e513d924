"""In a real browser (headless Chromium): the MLflow UI shows the small study's runs, the
report page renders every architecture's row and every image, and TensorBoard's HPARAMS tab
(`make tensorboard SEARCH=...`) lists every trial of a finished search. CI installs Debian's
chromium and chromium-driver; without them these tests are skipped, saying so (under CI=true:
they fail)."""

import json
import time
import urllib.request

import pandas as pd
import pytest

from afternoon.tracking.uris import RUNS_TABLE_QUERY, study_ui_url
from helpers.browser import chromium, screenshot
from helpers.components import needs_browser
from helpers.search import TINY, search_dir
from helpers.services import make_tensorboard, mlflow_server, search_runs, wait_for

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


# The text of every cell of TensorBoard's HParams table view (a vaadin-grid inside the hparams
# plugin's shadow roots), in row order.
HPARAMS_CELLS = """
const out = [];
(function walk(root) {
  for (const el of root.querySelectorAll('*')) {
    if (el.tagName === 'VAADIN-GRID-CELL-CONTENT') out.push(el.textContent.trim());
    if (el.shadowRoot) walk(el.shadowRoot);
  }
})(document);
return out;
"""


def test_tensorboard_hparams_tab_lists_every_trial_of_a_search(search_study, tmp_path):
    """`make tensorboard SEARCH=digits_tiny/digits`, typed in the study's folder as in a
    checkout's: the HPARAMS tab's table view has a row per trial (Trial ID trial-<id>) with its
    objective, as the slides show it."""
    trials = pd.read_csv(search_dir(search_study, TINY) / "trials.csv", dtype={"trial_id": str})
    expected = {f"trial-{t.trial_id}": f"{t.objective:.5f}" for t in trials.itertuples()}
    log = tmp_path / "tensorboard.log"
    with (
        make_tensorboard(log, f"SEARCH={TINY}/digits", cwd=search_study) as base,
        chromium() as driver,
    ):
        driver.get(f"{base}/#hparams")
        cells = wait_for(
            lambda: (c := driver.execute_script(HPARAMS_CELLS)) and set(expected) <= set(c) and c,
            timeout=60,
            what="every trial in TensorBoard's HParams table",
        )
        starts = [i for i, cell in enumerate(cells) if cell.startswith("trial-")]
        rows = {
            cells[i]: cells[i + 1 : j]
            for i, j in zip(starts, [*starts[1:], len(cells)], strict=True)
        }
        assert set(rows) == set(expected)
        for trial, objective in expected.items():
            assert objective in rows[trial], (trial, rows[trial])
        assert "val_accuracy" in cells[: starts[0]]  # the metric's column
        assert screenshot(driver, tmp_path / "hparams.png").stat().st_size > 10_000
    assert f"results/search/{TINY}/digits/tensorboard" in log.read_text()
