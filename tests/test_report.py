"""The study report: score table, CSV/Markdown/HTML outputs, provenance, input errors; and, on
a finished small study, that report-only edits rerun only the report and `snakemake --report`."""

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure

from afternoon.cli import main as cli_main
from afternoon.layout import Layout
from afternoon.report import study as report
from afternoon.report.costs import pareto_front
from afternoon.report.plots import pareto_figure
from afternoon.tracking import config_hash
from helpers.runners import run_snakemake

ARCHS = {"fc64": "Two dense layers", "cnn1": "One convolution <and> pooling"}
# dataset -> arch -> (test accuracy, final train accuracy, epochs run, epochs planned)
RUNS = {
    "digits": {"fc64": (0.9733333, 0.99, 5, 5), "cnn1": (0.9622222, 0.96, 4, 5)},
    "mnist": {"fc64": (0.981, 0.995, 3, 3), "cnn1": (0.985, 0.99, 2, 3)},
}
REFERENCE = {"fc64": {"mnist": 97.5}, "cnn1": {"mnist": 98.7}}
SEED_GPU_S = {"fc64": 1, "cnn1": 12}  # the seeds' GPU seconds per 60k epoch
# dataset -> arch -> (core-seconds, train samples per second); mnist cnn1 on a GPU
COSTS = {"digits": {"fc64": 10.0, "cnn1": 40.0}, "mnist": {"fc64": 100.0, "cnn1": 1000.0}}
RATES = {"fc64": 60_000.0, "cnn1": 5_000.0}
DEVICES = {"fc64": "Intel(R) Xeon(R) Test CPU (2 of 2 cores)", "cnn1": "1x NVIDIA H200"}
SERVER = "http://127.0.0.1:5000"


def settings(tracking_uri=""):
    architectures = [
        dict(
            name=n,
            description=d,
            reference_accuracy={ds: REFERENCE[n].get(ds) for ds in RUNS},
            seed_gpu_seconds_per_epoch=SEED_GPU_S[n],
        )
        for n, d in ARCHS.items()
    ]
    return dict(
        study="unit", tracking_uri=tracking_uri, datasets=list(RUNS), architectures=architectures
    )


def write_png(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(1, 1))
    fig.subplots().imshow([[0, 1], [1, 0]], cmap=colour)
    fig.savefig(path, format="png")


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_run(root, ds, arch, test_acc, train_acc, epochs_run, epochs_planned):
    """One run's training and evaluation outputs, as train_job and evaluate_job write them."""
    train, evals, run_id = (
        root / f"runs/{ds}/{arch}",
        root / f"eval/{ds}/{arch}",
        f"run-{ds}-{arch}",
    )
    write_json(train / "run.json", dict(run_id=run_id, tracking_uri=SERVER, experiment="unit"))
    metrics = dict(architecture=arch, dataset=ds, epochs_planned=epochs_planned)
    metrics.update(epochs_run=epochs_run, best_epoch=epochs_run, train_time_s=2.0 * epochs_run)
    metrics.update(time_per_epoch_s=1.5, final_loss=0.1, final_accuracy=train_acc)
    metrics.update(parameters=1000 + len(arch), run_id=run_id)
    cost_metric = "cost_gpu_s" if "H200" in DEVICES[arch] else "cost_core_s"
    metrics.update({cost_metric: COSTS[ds][arch], "device": DEVICES[arch]})
    metrics.update(train_samples_per_s=RATES[arch])
    write_json(train / "metrics.json", metrics)
    epoch = pd.Series(range(1, epochs_run + 1))
    history = pd.DataFrame(dict(epoch=epoch, loss=1 / epoch, accuracy=train_acc - 0.01 / epoch))
    history = history.assign(val_loss=1.2 / epoch, val_accuracy=test_acc, epoch_time_s=1.5)
    history.to_csv(train / "history.csv", index=False)
    evaluation = dict(test_loss=0.25, test_accuracy=test_acc, inference_images_per_s=12345.6)
    write_json(evals / "metrics.json", evaluation | dict(n_test=450, n_misclassified=12))
    write_png(evals / "confusion_matrix.png", "Blues")
    write_png(evals / "misclassified.png", "gray")


@pytest.fixture
def results(tmp_path):
    """A results tree in the pipeline's file formats: 2 datasets x 2 architectures."""
    root = tmp_path / "results"
    tracking = dict(tracking_uri=SERVER, experiment="unit", experiment_id="7")
    write_json(root / "mlflow/tracking.json", tracking)
    for ds, runs in RUNS.items():
        sources = [{"name": "train-images.gz", "sha256": "ab" * 32}] if ds == "mnist" else []
        card = dict(dataset=ds, source_files=sources, npz_sha256=f"{ds}-npz-sha")
        write_json(root / f"data/{ds}.card.json", card)
        for arch, numbers in runs.items():
            write_run(root, ds, arch, *numbers)
    return root


def paths_of(results, out=None):
    """The report's --paths for the results tree ``results`` (outputs in ``out``, if given)."""
    paths = Layout(str(results)).report_paths(list(RUNS), list(ARCHS))
    if out is not None:
        outputs = Layout(str(out.parent)).report_paths(list(RUNS), list(ARCHS))
        paths.update(outputs=outputs["outputs"], figures=outputs["figures"])
    return paths


def build(results, uri=""):
    out = results / "report"
    return report.build_report(settings(uri), paths_of(results)), out


def test_score_table_numbers(results):
    study = report.load_study(settings(), paths_of(results))
    long = report.score_rows(settings(), study["runs"])
    wide = report.score_table(settings(), long)
    assert list(wide.index) == ["fc64", "cnn1"]  # zoo order, not sorted
    assert wide["digits", "test_accuracy_pct"].round(2).tolist() == [97.33, 96.22]
    assert ("digits", "reference_pct") not in wide.columns  # the zoo has no digits accuracy
    assert wide["mnist", "reference_pct"].tolist() == [97.5, 98.7]
    assert wide["mnist", "difference_pct"].round(2).tolist() == [0.6, -0.2]
    assert wide["digits", "best"].tolist() == [True, False]
    assert wide["mnist", "best"].tolist() == [False, True]
    assert wide["mnist", "train_minus_test_pp"].round(2).tolist() == [1.4, 0.5]


def test_csv_and_markdown(results):
    _, out = build(results)
    csv = pd.read_csv(out / "scores.csv", index_col="architecture")
    assert list(csv.index) == ["fc64", "cnn1"]
    assert csv.loc["cnn1", "mnist_test_accuracy_pct"] == pytest.approx(98.5)
    assert csv.loc["fc64", "mnist_difference_pct"] == pytest.approx(0.6)
    assert (
        csv.loc["cnn1", "digits_epochs_run"] == 4 and csv.loc["cnn1", "digits_epochs_planned"] == 5
    )
    assert csv["mnist_best"].tolist() == [False, True]
    assert "digits_reference_pct" not in csv.columns
    lines = (out / "scores.md").read_text().splitlines()
    assert len(lines) == 4  # header, rule, one row per architecture
    assert "mnist Δ (pp)" in lines[0] and "digits seed (%)" not in lines[0]
    fc64 = [cell.strip() for cell in lines[2].split("|")[1:-1]]
    assert fc64[:3] == ["fc64", "Two dense layers", "**97.33** ★"]
    assert fc64[11:17] == ["98.10", "97.5", "+0.60", "0.250", "1,004", "3/3"]
    cnn1 = [cell.strip() for cell in lines[3].split("|")[1:-1]]
    assert cnn1[2] == "96.22" and cnn1[11:14] == ["**98.50** ★", "98.7", "-0.20"]
    # per dataset: ours and the seeds' s per 60k epoch (the seeds' only where they ran), the cost
    assert "digits seed GPU s/60k" not in lines[0] and "mnist seed GPU s/60k" in lines[0]
    assert fc64[9:11] == ["1.0", "10 core·s"] and fc64[-3:] == ["1.0", "1", "100 core·s"]
    assert cnn1[-3:] == ["12.0", "12", "1,000 GPU·s"]
    assert csv.loc["cnn1", "mnist_cost"] == 1000 and csv.loc["cnn1", "mnist_cost_unit"] == "GPU·s"
    assert csv.loc["fc64", "digits_device"] == DEVICES["fc64"]


def test_html_is_self_contained_with_every_row_and_provenance(results):
    context, out = build(results, uri=SERVER)
    html = (out / "index.html").read_text()
    for arch in ARCHS:
        assert f'<tr class="score-row" data-arch="{arch}">' in html
    assert "One convolution &lt;and&gt; pooling" in html  # escaped
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) == 3 * len(RUNS) + 2 * 4  # figures per dataset, 2 images per run
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert html.count('class="group-start best"') == 2
    for ds in RUNS:
        assert (out / f"learning_curves_{ds}.png").stat().st_size > 0
        assert (out / f"overfitting_{ds}.png").stat().st_size > 0
    prov = context["provenance"]
    assert prov["config_hash"] == config_hash(settings(SERVER)) and prov["config_hash"] in html
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", prov["git_commit"]) and prov["git_commit"] in html
    assert {"tensorflow", "numpy", "mlflow", "snakemake", "pandas"} <= set(prov["versions"])
    assert "mnist-npz-sha" in html and "ab" * 32 in html and "train-images.gz" in html
    link = f"{SERVER}/#/experiments/7/runs/run-mnist-cnn1"
    assert f'href="{link}"' in html
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_no_link_for_a_database_store(results):
    for path in results.glob("runs/*/*/run.json"):
        record = json.loads(path.read_text()) | {"tracking_uri": "sqlite:////x/mlflow.db"}
        path.write_text(json.dumps(record))
    _, out = build(results)
    html = (out / "index.html").read_text()
    assert "run-digits-fc64" in html and "#/experiments/" not in html


@pytest.mark.parametrize(
    "relative, damage, why",
    [
        ("eval/mnist/cnn1/misclassified.png", "delete", "cannot read"),
        ("eval/digits/fc64/confusion_matrix.png", "text", "not a PNG"),
        ("runs/mnist/fc64/metrics.json", "text", "cannot read JSON"),
        ("runs/digits/cnn1/history.csv", "text", "no 'accuracy' column"),
        ("eval/mnist/fc64/metrics.json", "empty-json", "no 'test_accuracy'"),
        ("data/mnist.card.json", "delete", "cannot read JSON"),
        ("mlflow/tracking.json", "delete", "cannot read JSON"),
    ],
)
def test_bad_input_is_one_line_naming_the_file(results, capsys, relative, damage, why):
    path = results / relative
    if damage == "delete":
        path.unlink()
    else:
        path.write_text("{}" if damage == "empty-json" else "garbage\n")
    argv = [
        "report",
        "--settings",
        json.dumps(settings()),
        "--paths",
        json.dumps(paths_of(results)),
    ]
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("afternoon: error: ")
    assert str(path) in err and why in err
    assert not (results / "report/index.html").exists()


def test_module_entry_point(results):
    paths = json.dumps(paths_of(results, out=results / "r" / "report"))
    command = [
        sys.executable,
        "-m",
        "afternoon.cli",
        "report",
        "--settings",
        json.dumps(settings()),
    ]
    command += ["--paths", paths]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (results / "r/report/index.html").exists()


def dry_run_jobs(workdir, *args):
    """Rule name -> job count that a dry run plans (Snakemake's job stats table)."""
    result = run_snakemake(workdir, "-n", "--quiet", "rules", *args)
    out = result.stdout + result.stderr
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M) if m[1] != "total"}


@pytest.mark.slow
def test_report_settings_rerun_only_the_report(small_study, tmp_path):
    work = tmp_path / "study"
    shutil.copytree(small_study, work, symlinks=True)  # keeps mtimes and .snakemake metadata
    assert dry_run_jobs(work) == {}
    zoo_file = work / "config/zoo.yaml"
    zoo = yaml.safe_load(zoo_file.read_text())
    zoo["fc64"]["description"] = "Two dense hidden layers of 64 units (edited)"
    zoo_file.write_text(yaml.safe_dump(zoo, sort_keys=False))
    assert dry_run_jobs(work) == {"all": 1, "report": 1}
    zoo["cnn1"]["reference_accuracy"]["digits"] = 97.0
    zoo_file.write_text(yaml.safe_dump(zoo, sort_keys=False))
    assert dry_run_jobs(work) == {"all": 1, "report": 1}
    assert dry_run_jobs(work, "--forceall")["report"] == 1


@pytest.mark.slow
def test_snakemake_own_report(small_study, tmp_path):
    html = (small_study / "results/report/index.html").read_text()
    assert all(f'data-arch="{arch}"' in html for arch in ("fc64", "cnn1"))
    target = tmp_path / "snakemake-report.html"
    run_snakemake(small_study, "--report", str(target))
    text = target.read_text()
    for name in (
        "learning_curves_digits.png",
        "overfitting_digits.png",
        "scores.csv",
        "index.html",
    ):
        assert name in text
    assert "Training and validation accuracy" in text  # a caption from workflow/report/


def test_pareto_front_and_plot_contents(results):
    study = report.load_study(settings(), paths_of(results))
    long = report.score_rows(settings(), study["runs"])
    digits, mnist = (long[long["dataset"] == ds].set_index("architecture") for ds in RUNS)
    # digits: fc64 is cheaper and more accurate, so cnn1 is dominated; mnist: a trade-off
    assert pareto_front(digits).to_dict() == {"fc64": True, "cnn1": False}
    assert pareto_front(mnist).to_dict() == {"fc64": True, "cnn1": True}
    fig = pareto_figure(digits.reset_index(), "digits")
    (ax,) = fig.axes
    dominated, front = ax.collections
    assert (dominated.get_label(), front.get_label()) == ("dominated", "Pareto front")
    assert front.get_offsets().tolist() == [[10.0, pytest.approx(97.33333)]]
    assert dominated.get_offsets().tolist() == [[40.0, pytest.approx(96.22222)]]
    assert sorted(text.get_text() for text in ax.texts) == ["cnn1", "fc64"]
    assert ax.get_xscale() == "log" and "core·s" in ax.get_xlabel()


def test_pareto_front_ties_and_missing_costs():
    runs = pd.DataFrame(
        {
            "test_accuracy_pct": [90.0, 90.0, 95.0, 99.0, 80.0],
            "cost": [10.0, 10.0, 10.0, float("nan"), 5.0],
        },
        index=["a", "b", "c", "no_cost", "cheap"],
    )
    # c beats a and b (same cost, more accurate); cheap is cheapest; no cost: never on the front
    assert pareto_front(runs).to_dict() == {
        "a": False, "b": False, "c": True, "no_cost": False, "cheap": True
    }  # fmt: skip


def test_html_cost_section(results):
    context, out = build(results)
    html = (out / "index.html").read_text()
    rows = {(r["dataset"], r["architecture"]): r for r in context["devices"]}
    assert rows["mnist", "cnn1"] == dict(
        dataset="mnist", architecture="cnn1", device="1x NVIDIA H200", cost="1,000 GPU·s",
        ours="12.0", seeds="12", front=True,
    )  # fmt: skip
    assert rows["digits", "cnn1"]["front"] is False and rows["digits", "fc64"]["front"] is True
    assert html.count('<tr class="cost-row"') == 4
    assert DEVICES["fc64"] in html and "1,000 GPU·s" in html
    assert "<code>make tensorboard</code>" in html
    for ds in RUNS:
        assert (out / f"pareto_{ds}.png").read_bytes().startswith(b"\x89PNG")
