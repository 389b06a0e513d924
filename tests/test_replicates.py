"""Replicates (config ``replicates: N``): each dataset x architecture trained N times with seeds
seed + i, replicate 0 at the paths and with the spec of a study without replicates; the report's
mean, sd, n and range. The digits study with 2 replicates, trained after a finished study of
one: only replicate 1's jobs and the report run, 2 MLflow runs with their seeds and tags, the
report's mean and sd those of the two evaluations."""

import json
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest
import yaml

from afternoon.config import check_against_schema, job_spec, load_yaml, load_zoo
from afternoon.errors import ConfigError
from afternoon.layout import Layout
from afternoon.report import study as report
from helpers.paths import REPO
from helpers.runners import run_snakemake
from helpers.study import write_study

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def test_replicate_0_keeps_the_paths_and_spec_of_a_study_without_replicates():
    layout = Layout()
    assert layout.train_outputs("digits", "fc64", 0) == layout.train_outputs("digits", "fc64")
    assert layout.train_outputs("digits", "fc64")["model"] == "results/runs/digits/fc64/model.keras"
    assert (
        layout.eval_outputs("digits", "fc64")["metrics"] == "results/eval/digits/fc64/metrics.json"
    )
    assert layout.run_dir("digits", "fc64", 2) == "results/runs/digits/fc64@r2"
    assert layout.eval_dir("digits", "fc64", 2) == "results/eval/digits/fc64@r2"
    assert layout.checkpoint_dir("digits", "fc64", "{replicate}").endswith(
        "fc64@r{replicate}/checkpoint"
    )
    one = layout.report_paths(["digits"], ["fc64"])["runs"]
    two = layout.report_paths(["digits"], ["fc64"], 2)["runs"]
    assert two[0] == one[0] and [run["replicate"] for run in two] == [0, 1]
    assert two[1]["train"]["metrics"] == "results/runs/digits/fc64@r1/metrics.json"
    config = load_yaml(REPO / "config/config.yaml")
    zoo = load_zoo(REPO / "config/zoo.yaml")
    spec = job_spec(config, zoo, "digits", "fc64")
    assert job_spec(config, zoo, "digits", "fc64", 0) == spec and "replicate" not in spec
    assert job_spec(config, zoo, "digits", "fc64", 3) == spec | {"seed": 45, "replicate": 3}


@pytest.mark.parametrize("value", [0, -1, "two"])
def test_replicates_below_one_are_refused_in_one_line(value):
    config = load_yaml(REPO / "config/config.yaml") | {"replicates": value}
    with pytest.raises(ConfigError, match=r"^config: key replicates: ") as err:
        check_against_schema(config, load_yaml(SCHEMA))
    assert "\n" not in str(err.value)


# --- the report of a study with replicates (the pipeline's file formats, no training) -------

ACCURACY = {"fc64": [0.95, 0.97, 0.96], "cnn1": [0.90, 0.92, 0.91]}
LOSS = {"fc64": [0.30, 0.20, 0.25], "cnn1": [0.40, 0.35, 0.30]}
REFERENCE = {"fc64": 96.5, "cnn1": 97.0}  # fc64: within its range; cnn1: above it


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_png(path):
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    Figure(figsize=(1, 1)).savefig(path, format="png")


def write_replicates(root, replicates):
    """digits x fc64, cnn1, ``replicates`` runs each: their train and evaluate outputs."""
    layout = Layout(str(root))
    write_json(root / "mlflow/tracking.json", dict(tracking_uri="", experiment_id="1"))
    write_json(root / "data/digits.card.json", dict(dataset="digits", npz_sha256="sha"))
    for arch in ACCURACY:
        for i in range(replicates):
            train = {k: Path(v) for k, v in layout.train_outputs("digits", arch, i).items()}
            evaluation = {k: Path(v) for k, v in layout.eval_outputs("digits", arch, i).items()}
            write_json(train["run"], dict(run_id=f"{arch}-{i}", tracking_uri=""))
            epochs = 3 + i
            write_json(train["metrics"], dict(
                final_accuracy=0.99, parameters=1000, epochs_run=epochs, epochs_planned=5,
                train_time_s=10.0 + i, best_epoch=epochs, cost_core_s=20.0 + i, device="CPU",
            ))  # fmt: skip
            history = pd.DataFrame(dict(epoch=range(1, epochs + 1), accuracy=0.9, loss=0.3))
            history.assign(val_accuracy=0.9, val_loss=0.3).to_csv(train["history"], index=False)
            write_json(evaluation["metrics"], dict(
                test_accuracy=ACCURACY[arch][i], test_loss=LOSS[arch][i],
                inference_images_per_s=1000.0, n_test=450, n_misclassified=20,
            ))  # fmt: skip
            write_png(evaluation["confusion_png"])
            write_png(evaluation["misclassified_png"])
    return layout.report_paths(["digits"], list(ACCURACY), replicates)


def settings():
    archs = [dict(name=a, description=a, reference_accuracy={"digits": REFERENCE[a]},
                  seed_gpu_seconds_per_epoch=None) for a in ACCURACY]  # fmt: skip
    return dict(study="unit", tracking_uri="", datasets=["digits"], architectures=archs)


def test_the_report_shows_mean_sd_n_and_whether_the_seed_lies_in_the_range(tmp_path):
    paths = write_replicates(tmp_path / "results", 3)
    report.build_report(settings(), paths)
    out = tmp_path / "results/report"
    csv = pd.read_csv(out / "scores.csv", index_col="architecture")
    for arch, accuracies in ACCURACY.items():
        pct = [100 * a for a in accuracies]
        row = csv.loc[arch]
        assert row["digits_test_accuracy_pct"] == pytest.approx(statistics.mean(pct))
        assert row["digits_test_accuracy_pct_sd"] == pytest.approx(statistics.stdev(pct))
        assert row["digits_n"] == 3
        assert (row["digits_test_accuracy_pct_min"], row["digits_test_accuracy_pct_max"]) == (
            pytest.approx(min(pct)), pytest.approx(max(pct)))  # fmt: skip
        assert row["digits_test_loss"] == pytest.approx(statistics.mean(LOSS[arch]))
        assert row["digits_difference_pct"] == pytest.approx(statistics.mean(pct) - REFERENCE[arch])
        assert [row[f"digits_test_accuracy_pct_r{i}"] for i in range(3)] == pytest.approx(pct)
        assert row["digits_epochs_run"] == 4 and row["digits_cost"] == pytest.approx(21.0)
    assert csv["digits_reference_in_range"].tolist() == [True, False]
    lines = (out / "scores.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].split("|")[1:-1]]
    fc64 = dict(zip(header, [cell.strip() for cell in lines[2].split("|")[1:-1]], strict=True))
    assert fc64["digits test acc (%)"] == "**96.00** ★" and fc64["digits sd (pp)"] == "1.00"
    assert fc64["digits n"] == "3" and fc64["digits seed in range"] == "yes"
    assert fc64["digits epochs"] == "4/5"
    cnn1 = dict(zip(header, [cell.strip() for cell in lines[3].split("|")[1:-1]], strict=True))
    assert cnn1["digits seed in range"] == "no" and cnn1["digits Δ (pp)"] == "-6.00"
    html = (out / "index.html").read_text()
    assert 'data-run="fc64@digits#r2"' in html and 'data-run="fc64@digits"' in html
    assert "Each architecture trained 3 times" in html
    assert html.count('<tr class="cost-row"') == 2  # the cost table: one row (the means) per arch


def test_one_replicate_shows_the_table_of_a_study_without_replicates(tmp_path):
    paths = write_replicates(tmp_path / "results", 1)
    report.build_report(settings(), paths)
    out = tmp_path / "results/report"
    csv = pd.read_csv(out / "scores.csv", index_col="architecture")
    assert not [c for c in csv.columns if re.search(r"_sd$|_n$|_r\d+$|in_range|_min$|_max$", c)]
    header = (out / "scores.md").read_text().splitlines()[0]
    assert "sd (pp)" not in header and "seed in range" not in header and "digits n " not in header
    assert "Each architecture trained" not in (out / "index.html").read_text()


# --- the digits study with 2 replicates, after a finished study of one ----------------------


def planned_jobs(workdir) -> dict[str, list[str]]:
    """Rule -> sorted wildcard strings of the jobs a dry run would run."""
    out = run_snakemake(workdir, "-n").stdout
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=rule \w+:|localrule \w+:)", out):
        if head := re.match(r"(?:local)?rule (\w+):", block):
            wildcards = re.search(r"wildcards: (.*)", block)
            jobs.setdefault(head[1], []).append(wildcards[1] if wildcards else "")
    return {rule: sorted(w) for rule, w in jobs.items()}


@pytest.mark.slow
def test_digits_with_2_replicates(tmp_path):
    import mlflow

    work = write_study(tmp_path / "study", archs=["fc64"], max_epochs=1)
    run_snakemake(work, "--cores", "2")
    results = work / "results"
    replicate_0 = {p: p.stat().st_mtime_ns for p in (results / "runs/digits/fc64").glob("*.*")}
    replicate_0 |= {p: p.stat().st_mtime_ns for p in (results / "eval/digits/fc64").glob("*")}
    config_file = work / "config/config.yaml"
    config = yaml.safe_load(config_file.read_text()) | {"replicates": 2}
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    replicate_1 = "dataset=digits, arch=fc64, replicate=1"
    assert planned_jobs(work) == {
        "train_replicate": [replicate_1], "evaluate_replicate": [replicate_1],
        "report": [""], "all": [""],
    }  # fmt: skip
    run_snakemake(work, "--cores", "2")
    assert {p: p.stat().st_mtime_ns for p in replicate_0} == replicate_0  # not rerun, not moved
    assert planned_jobs(work) == {}

    marker = json.loads((results / "mlflow/tracking.json").read_text())
    client = mlflow.tracking.MlflowClient(marker["tracking_uri"])
    runs = {run.info.run_name: run for run in client.search_runs([marker["experiment_id"]])}
    assert sorted(runs) == ["fc64@digits", "fc64@digits#r1"]
    for name, folder, seed, replicate in (("fc64@digits", "fc64", "42", "0"),
                                          ("fc64@digits#r1", "fc64@r1", "43", "1")):  # fmt: skip
        run = runs[name]
        assert run.data.params["seed"] == seed and run.data.tags["afternoon.replicate"] == replicate
        record = json.loads((results / f"runs/digits/{folder}/run.json").read_text())
        assert record["run_id"] == run.info.run_id and "test_accuracy" in run.data.metrics
    selected = client.search_runs(
        [marker["experiment_id"]], "attributes.run_name LIKE 'fc64@digits%'"
    )
    assert len(selected) == 2  # the README's filter for one architecture's replicates

    accuracies = [
        100
        * json.loads((results / f"eval/digits/{folder}/metrics.json").read_text())["test_accuracy"]
        for folder in ("fc64", "fc64@r1")
    ]
    csv = pd.read_csv(results / "report/scores.csv", index_col="architecture")
    assert csv.loc["fc64", "digits_test_accuracy_pct"] == pytest.approx(statistics.mean(accuracies))
    assert csv.loc["fc64", "digits_test_accuracy_pct_sd"] == pytest.approx(
        statistics.stdev(accuracies), abs=1e-5
    )
    assert csv.loc["fc64", "digits_n"] == 2
    lines = (results / "report/scores.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].split("|")[1:-1]]
    fc64 = dict(zip(header, [cell.strip() for cell in lines[2].split("|")[1:-1]], strict=True))
    assert fc64["digits test acc (%)"].strip("*★ ") == f"{statistics.mean(accuracies):.2f}"
    assert (
        fc64["digits sd (pp)"] == f"{statistics.stdev(accuracies):.2f}" and fc64["digits n"] == "2"
    )
