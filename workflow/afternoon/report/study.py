"""The study's report: "The Score Thus Far" table, learning curves, overfitting gaps, per-run
confusion matrices and misclassified images, provenance: one self-contained HTML page (images as
data URIs) plus scores.csv, scores.md and the figures. ``--settings`` is the report-only config
slice the rule passes (study, tracking URI, datasets, per architecture in zoo order its
description and the seed's accuracy per dataset). With replicates (``afternoon.report.replicates``)
every score is the mean over an architecture's replicates."""

from __future__ import annotations

import datetime
from importlib import metadata, resources
from pathlib import Path

import pandas as pd

from afternoon.errors import DataFormatError
from afternoon.fileio import atomic_path, read_json, write_text_atomic
from afternoon.layout import TENSORBOARD_COMMAND
from afternoon.report.costs import cost_columns, device_rows
from afternoon.report.plots import data_uri, plot_learning_curves, plot_overfitting, plot_pareto
from afternoon.report.replicates import (
    SPREAD_COLUMNS,
    per_replicate_columns,
    replicated,
    runs_of,
    summarise,
)
from afternoon.report.search import search_sections
from afternoon.tracking import config_hash, provenance_tags
from afternoon.tracking.provenance import strip_credentials
from afternoon.tracking.uris import run_url

TEMPLATES = resources.files("afternoon") / "templates"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Score columns (CSV names): display label and format; label None: CSV only. A study with
# replicates: each the mean over them, and the SPREAD_COLUMNS (only then).
COLUMNS = {
    "test_accuracy_pct": ("test acc (%)", "{:.2f}"),
    "test_accuracy_pct_sd": ("sd (pp)", "{:.2f}"),
    "n": ("n", "{:.0f}"),
    "reference_pct": ("seed (%)", "{:g}"),  # with difference_pct: only where the zoo has one
    "difference_pct": ("Δ (pp)", "{:+.2f}"),
    "reference_in_range": ("seed in range", None),  # yes/no: within the replicates' [min, max]
    "test_loss": ("test loss", "{:.3f}"),
    "parameters": ("params", "{:,.0f}"),
    "epochs_run": ("epochs", None),  # shown as "run/planned"
    "epochs_planned": (None, None),
    "train_time_s": ("train (s)", "{:.1f}"),
    "time_per_epoch_s": ("s/epoch", "{:.3f}"),
    "inference_images_per_s": ("img/s", "{:,.0f}"),
    "s_per_60k_epoch": ("s/60k", "{:.1f}"),  # beside the seeds' GPU time (afternoon.report.costs)
    "seed_gpu_s_per_epoch": ("seed GPU s/60k", "{:g}"),  # only where the zoo has one
    "cost": ("cost", "{:,.0f}"),  # shown with its unit
    "cost_unit": (None, None),
    "device": (None, None),
    "train_minus_test_pp": (None, None),  # the overfitting figure's numbers
}
COLUMNS.update({column: (None, None) for column in SPREAD_COLUMNS if column not in COLUMNS})
TRAIN_KEYS = ("final_accuracy", "parameters", "epochs_run", "epochs_planned", "train_time_s")
EVAL_KEYS = ("test_accuracy", "test_loss", "inference_images_per_s")


def _json(path: Path, keys=()) -> dict:
    data = read_json(path)
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            raise DataFormatError(f"{path}: no {key!r} (not the file this stage writes)")
    return data


def _history(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as err:
        why = getattr(err, "strerror", None) or str(err).strip().splitlines()[0]
        raise DataFormatError(f"{path}: cannot read CSV ({why})") from None
    if missing := {"epoch", "accuracy", "loss"} - set(df.columns):
        raise DataFormatError(f"{path}: no {sorted(missing)[0]!r} column")
    return df


def png_uri(path: Path) -> str:
    """A PNG file (another job's) as a data: URI, checked: a missing or corrupt one is one line."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read ({err.strerror})") from None
    if not data.startswith(PNG_MAGIC):
        raise DataFormatError(f"{path}: not a PNG image")
    return data_uri(data)


def load_study(settings: dict, paths: dict) -> dict:
    """Every input of the report (``paths``: the rule's, see ``main``), checked; a missing or
    corrupt file is one line naming it."""
    tracking = _json(Path(paths["tracking"]), ("tracking_uri", "experiment_id"))
    cards = {ds: _json(Path(paths["cards"][ds])) for ds in settings["datasets"]}
    runs = {}  # (dataset, arch, replicate) -> the run's files, read
    for given in paths["runs"]:  # each dataset's own architectures (config dataset_architectures)
        ds, arch, replicate = given["dataset"], given["arch"], given.get("replicate", 0)
        train = {k: Path(v) for k, v in given["train"].items()}
        evals = {k: Path(v) for k, v in given["eval"].items()}
        record = _json(train["run"], ("run_id", "tracking_uri"))
        runs[ds, arch, replicate] = dict(
            train=_json(train["metrics"], TRAIN_KEYS),
            history=_history(train["history"]),
            record=record,
            evaluation=_json(evals["metrics"], EVAL_KEYS),
            confusion=png_uri(evals["confusion_png"]),
            misclassified=png_uri(evals["misclassified_png"]),
            url=run_url(record["tracking_uri"], tracking["experiment_id"], record["run_id"]),
        )
    return dict(tracking=tracking, cards=cards, runs=runs)


def score_rows(settings: dict, runs: dict) -> pd.DataFrame:
    """One row per (architecture, dataset) with its scores, the means over its replicates
    (``replicates.summarise``); ``best``: top accuracy of its dataset (ties all marked)."""
    long = summarise(replicate_rows(settings, runs))
    best = long.groupby("dataset")["test_accuracy_pct"].transform("max")
    return long.assign(best=long["test_accuracy_pct"] == best)


def replicate_rows(settings: dict, runs: dict) -> pd.DataFrame:
    """One row per run (architecture, dataset, replicate) with its scores."""
    rows = []
    for arch in settings["architectures"]:
        for ds in settings["datasets"]:
            replicates = sorted(r for d, a, r in runs if (d, a) == (ds, arch["name"]))
            for replicate in replicates:  # none: not trained on this dataset
                rows.append(_score_row(arch, ds, replicate, runs[ds, arch["name"], replicate]))
    floats = ("reference_pct", "difference_pct", "cost", "s_per_60k_epoch", "seed_gpu_s_per_epoch")
    return pd.DataFrame(rows).astype(dict.fromkeys(floats, float))


def _score_row(arch: dict, ds: str, replicate: int, run: dict) -> dict:
    train, evaluation = run["train"], run["evaluation"]
    row = dict(architecture=arch["name"], dataset=ds, replicate=replicate)
    row["test_accuracy_pct"] = accuracy = 100 * float(evaluation["test_accuracy"])
    row["reference_pct"] = reference = arch["reference_accuracy"].get(ds)
    row["difference_pct"] = None if reference is None else accuracy - reference
    row.update({key: train[key] for key in TRAIN_KEYS[1:]})
    per_epoch = train["train_time_s"] / max(1, train["epochs_run"])
    row["time_per_epoch_s"] = train.get("time_per_epoch_s", per_epoch)
    row["test_loss"] = evaluation["test_loss"]
    row["inference_images_per_s"] = evaluation["inference_images_per_s"]
    row["train_minus_test_pp"] = 100 * float(train["final_accuracy"]) - accuracy
    row.update(cost_columns(arch, train, evaluation))
    return row


def score_table(settings: dict, long: pd.DataFrame) -> pd.DataFrame:
    """One row per architecture (zoo order), columns (dataset, score); seed columns where known."""
    columns = [*COLUMNS, "best"]
    wide = long.set_index(["architecture", "dataset"])[columns].unstack("dataset")
    order = pd.MultiIndex.from_product([settings["datasets"], columns])
    wide = wide.swaplevel(axis=1).reindex(columns=order)
    wide = wide.reindex([a["name"] for a in settings["architectures"]])
    unknown = [ds for ds in settings["datasets"] if wide[ds, "reference_pct"].isna().all()]
    seed_columns = ("reference_pct", "difference_pct", "seed_gpu_s_per_epoch", "reference_in_range")
    no_seed = [(ds, c) for ds in unknown for c in seed_columns]
    if not replicated(long):  # one run each: the table of a study without replicates
        no_seed += [(ds, c) for ds in settings["datasets"] for c in SPREAD_COLUMNS]
    return wide.drop(columns=list(dict.fromkeys(no_seed)))


def display_table(wide: pd.DataFrame, descriptions: dict) -> dict:
    """Header groups, and per architecture its cells as (text, css classes), for HTML and MD."""
    datasets = list(dict.fromkeys(wide.columns.get_level_values(0)))
    shown = {
        ds: [c for c in COLUMNS if (ds, c) in wide.columns and COLUMNS[c][0]] for ds in datasets
    }
    rows = []
    for arch, row in wide.iterrows():
        cells = []
        for ds in datasets:
            for i, column in enumerate(shown[ds]):
                value, css = row[ds, column], ["group-start"] if i == 0 else []
                if pd.isna(row[ds, "test_accuracy_pct"]):
                    text = "–"  # not trained on this dataset
                elif column == "epochs_run":  # a mean over replicates: 1 decimal at most
                    text = f"{round(value, 1):g}/{int(row[ds, 'epochs_planned'])}"
                elif column == "reference_in_range":
                    text = {True: "yes", False: "no"}.get(value, "–")
                    css += {"yes": ["above"], "no": ["below"]}.get(text, [])
                elif column == "cost" and not pd.isna(value):
                    text = f"{float(value):,.0f} {row[ds, 'cost_unit']}"
                else:
                    text = "–" if pd.isna(value) else COLUMNS[column][1].format(float(value))
                if column == "test_accuracy_pct" and row[ds, "best"] is True:
                    css.append("best")
                if column == "difference_pct" and not pd.isna(value):
                    css.append("above" if value >= 0 else "below")
                cells.append((text, " ".join(css)))
        rows.append(dict(name=arch, description=descriptions[arch], cells=cells))
    return dict(header=[(ds, [COLUMNS[c][0] for c in shown[ds]]) for ds in datasets], rows=rows)


def markdown_table(table: dict) -> str:
    """The display table as GitHub Markdown; the best accuracy per dataset in bold with a ★."""
    columns = ["architecture", "what changed"]
    columns += [f"{ds} {label}" for ds, labels in table["header"] for label in labels]
    rows = [
        [row["name"], row["description"]]
        + [f"**{text}** ★" if "best" in css.split() else text for text, css in row["cells"]]
        for row in table["rows"]
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.to_markdown(index=False, disable_numparse=True) + "\n"


def provenance(settings: dict, cards: dict, tracking: dict) -> dict:
    """Code, config, data and software the report's numbers came from."""
    tags = provenance_tags()  # git state and versions, as training tags its runs
    versions = {
        k.split(".", 2)[2]: v for k, v in tags.items() if k.startswith("afternoon.version.")
    }
    versions["pandas"] = metadata.version("pandas")
    data = {}
    for ds, card in cards.items():
        sources = [(f["name"], f.get("sha256") or "–") for f in card.get("source_files", [])]
        data[ds] = dict(npz_sha256=card.get("npz_sha256", "–"), sources=sources)
    return dict(
        git_commit=tags.get("afternoon.git_commit", "unknown"),
        git_dirty=tags.get("afternoon.git_dirty", "unknown"),
        config_hash=config_hash(settings),
        tracking_uri=strip_credentials(tracking["tracking_uri"]),
        experiment=tracking.get("experiment", settings["study"]),
        experiment_id=tracking["experiment_id"],
        data=data,
        versions=versions,
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


def render_html(context: dict) -> str:
    import jinja2

    loader = jinja2.FileSystemLoader(str(TEMPLATES))
    options = dict(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, **options)
    return env.get_template("report.html.j2").render(**context)


def build_report(settings: dict, paths: dict) -> dict:
    """Read every input, then write the figures, scores.csv, scores.md and index.html (last).

    ``paths``: ``tracking`` (the marker), ``cards`` (per dataset), ``runs`` (per run its dataset,
    arch and the ``train`` and ``eval`` files read), ``outputs`` (html, scores_csv, scores_md)
    and ``figures`` (per dataset, a PNG per kind of ``layout.REPORT_FIGURES``)."""
    study, outputs = load_study(settings, paths), paths["outputs"]
    long = score_rows(settings, study["runs"])
    wide = score_table(settings, long)
    csv = wide.set_axis([f"{ds}_{column}" for ds, column in wide.columns], axis=1)
    if replicated(long):  # and each replicate's own numbers
        rows = replicate_rows(settings, study["runs"])
        csv = csv.join(per_replicate_columns(rows, settings["datasets"]))
    with atomic_path(Path(outputs["scores_csv"])) as tmp:
        csv.rename_axis("architecture").to_csv(tmp, float_format="%.6g")
    descriptions = {a["name"]: a["description"] for a in settings["architectures"]}
    table = display_table(wide, descriptions)
    write_text_atomic(Path(outputs["scores_md"]), markdown_table(table))
    figures = []
    for ds in settings["datasets"]:
        runs = runs_of(study["runs"], ds, list(descriptions))  # per arch, its replicates
        # data.validation_fraction 0 (the slides' protocol): training curves only
        validated = any(
            "val_loss" in run["history"].columns for reps in runs.values() for run in reps
        )
        curves = plot_learning_curves(
            {a: [run["history"] for run in replicates] for a, replicates in runs.items()},
            {a: [run["train"].get("best_epoch") for run in reps] for a, reps in runs.items()},
            Path(paths["figures"][ds]["learning_curves"]),
            f"{ds}: learning curves ({'train vs validation' if validated else 'training only'})",
        )
        gaps = long[long["dataset"] == ds].set_index("architecture")["train_minus_test_pp"]
        overfitting = Path(paths["figures"][ds]["overfitting"])
        bars = plot_overfitting(gaps, overfitting, f"{ds}: overfitting")
        pareto = Path(paths["figures"][ds]["pareto"])
        plot_pareto(long[long["dataset"] == ds], pareto, f"{ds}: test accuracy against cost")
        figures.append(dict(dataset=ds, curves=png_uri(curves), overfitting=png_uri(bars),
                            pareto=png_uri(pareto), validated=validated))  # fmt: skip
    context = dict(
        study=settings["study"],
        datasets=settings["datasets"],
        table=table,
        figures=figures,
        runs=[
            dict(dataset=ds, arch=arch, replicate=replicate, **run)
            for (ds, arch, replicate), run in study["runs"].items()
        ],  # fmt: skip
        replicates=int(long["n"].max()) if len(long) else 1,
        provenance=provenance(settings, study["cards"], study["tracking"]),
        devices=device_rows(long),
        tensorboard_command=TENSORBOARD_COMMAND,
        searches=search_sections(paths.get("searches", []), settings.get("search_references")),
    )
    write_text_atomic(Path(outputs["html"]), render_html(context))
    return context
