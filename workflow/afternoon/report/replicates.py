"""Replicates in the report (config ``replicates``: each dataset x architecture trained N times,
seeds seed, seed + 1, ...): per architecture and dataset the mean of every score over its
replicates, their standard deviation, n and range, and whether the seed's published accuracy
lies within that range; the per-replicate columns of scores.csv.

With one replicate (the default) a mean is the run's own number and the report shows no spread
columns (``SPREAD_COLUMNS``): the table is that of a study without replicates.
"""

from __future__ import annotations

import pandas as pd

KEYS = ["architecture", "dataset"]
# Standard deviations over the replicates (sample sd, ddof 1): "<column>_sd".
SPREAD_OF = ("test_accuracy_pct", "test_loss", "train_time_s", "cost")
# The columns a study with replicates adds (scores.csv; the table shows sd, n and the range test).
SPREAD_COLUMNS = (
    *(f"{column}_sd" for column in SPREAD_OF),
    "n",
    "test_accuracy_pct_min",
    "test_accuracy_pct_max",
    "reference_in_range",
)
# scores.csv's per-replicate columns: "<dataset>_<column>_r<i>".
PER_REPLICATE = ("test_accuracy_pct", "test_loss")


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (architecture, dataset) of ``rows`` (one row per replicate, column
    ``replicate``), in their order: the mean of every number over the replicates, the first
    replicate's text (device, cost unit), ``n``, ``<column>_sd`` of ``SPREAD_OF`` (NaN for
    n = 1), the accuracy's ``test_accuracy_pct_min``/``_max``, ``difference_pct`` (the mean's
    minus the reference) and ``reference_in_range`` (True/False: the reference within
    [min, max]; None without a reference)."""
    groups = rows.drop(columns="replicate").groupby(KEYS, sort=False)
    data = rows.drop(columns=[*KEYS, "replicate"])
    numbers = [c for c in data.columns if pd.api.types.is_numeric_dtype(data[c])]
    texts = [c for c in data.columns if c not in numbers]
    summary = groups[numbers].mean().join(groups[texts].first())
    spread = groups[list(SPREAD_OF)].std(ddof=1).add_suffix("_sd")
    accuracy = groups["test_accuracy_pct"]
    summary = summary.join(spread).assign(
        n=groups.size(),
        test_accuracy_pct_min=accuracy.min(),
        test_accuracy_pct_max=accuracy.max(),
    )
    summary["difference_pct"] = summary["test_accuracy_pct"] - summary["reference_pct"]
    reference = summary["reference_pct"]
    inside = (reference >= summary["test_accuracy_pct_min"]) & (
        reference <= summary["test_accuracy_pct_max"]
    )
    summary["reference_in_range"] = inside.astype(object).where(reference.notna(), None)
    return summary.reset_index()[[*KEYS, *rows.columns.drop([*KEYS, "replicate"]),
                                  *SPREAD_COLUMNS]]  # fmt: skip


def replicated(long: pd.DataFrame) -> bool:
    """Whether any architecture of the study has more than one replicate."""
    return bool(len(long)) and int(long["n"].max()) > 1


def per_replicate_columns(rows: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """scores.csv's per-replicate columns, one row per architecture: ``<dataset>_<column>_r<i>``
    for each column of ``PER_REPLICATE`` and replicate i (dataset, column, replicate order)."""
    wide = rows.pivot(index="architecture", columns=["dataset", "replicate"],
                      values=list(PER_REPLICATE))  # fmt: skip
    order = sorted(wide.columns, key=lambda c: (datasets.index(c[1]), PER_REPLICATE.index(c[0]),
                                                c[2]))  # fmt: skip
    wide = wide[order]
    return wide.set_axis([f"{ds}_{column}_r{i}" for column, ds, i in wide.columns], axis=1)


def runs_of(runs: dict, dataset: str, archs) -> dict[str, list[dict]]:
    """Per architecture of ``archs`` trained on ``dataset``, its runs in replicate order
    (``runs``: keyed by dataset, architecture, replicate)."""
    found = {}
    for (ds, arch, _), run in sorted(runs.items(), key=lambda item: item[0][2]):
        if ds == dataset and arch in archs:
            found.setdefault(arch, []).append(run)
    return {arch: found[arch] for arch in archs if arch in found}
