"""The results tree, said once: every folder and file name the pipeline writes.

The Snakemake rules build each ``input:``/``output:`` from a ``Layout`` and pass every job the
explicit paths it reads and writes; no other module names these folders::

    results/
      raw/<dataset>/MANIFEST.json      download: the verified files, manifest last
      data/<dataset>.npz               preprocess: train/val/test arrays (uint8)
      data/<dataset>.card.json         preprocess: the dataset card
      mlflow/tracking.json             init-tracking: the store's URI and experiment (the marker)
      mlflow/mlflow.db                 the default (sqlite) tracking store
      mlflow/pending/                  runs whose tracking failed, for sync-tracking
      runs/<dataset>/<arch>/           train: model.keras history.csv metrics.json run.json
                                         tensorboard/ and, while it trains, checkpoint/
      eval/<dataset>/<arch>/           evaluate: metrics.json confusion_matrix.{csv,png}
                                         per_class.csv misclassified.{png,csv}
      report/                          report: index.html scores.csv scores.md
                                         learning_curves_<dataset>.png overfitting_<dataset>.png
      logs/<rule>/...                  each job's log
"""

from __future__ import annotations

from dataclasses import dataclass

RESULTS = "results"

# Output name -> file name, in each stage's folder (the names are the rules' output keys).
TRAIN_FILES = {
    "model": "model.keras",
    "history": "history.csv",
    "metrics": "metrics.json",
    "run": "run.json",
}
TENSORBOARD = "tensorboard"
CHECKPOINT = "checkpoint"  # not a rule output: Snakemake keeps it when a job fails
EVAL_FILES = {
    "metrics": "metrics.json",
    "confusion_csv": "confusion_matrix.csv",
    "confusion_png": "confusion_matrix.png",
    "per_class": "per_class.csv",
    "misclassified_png": "misclassified.png",
    "misclassified_csv": "misclassified.csv",
}
# The evaluation files logged to the training run (MLflow folder "evaluation/").
LOGGED_EVAL_FILES = ("metrics", "confusion_csv", "confusion_png", "per_class", "misclassified_png")
REPORT_FILES = {"html": "index.html", "scores_csv": "scores.csv", "scores_md": "scores.md"}
REPORT_FIGURES = ("learning_curves", "overfitting")  # one PNG per dataset each
PENDING = "pending"  # beside the tracking marker: the ledger sync-tracking reads


@dataclass(frozen=True)
class Layout:
    """The paths of one results tree (``root``); dataset and arch may be Snakemake wildcards
    such as ``"{dataset}"``."""

    root: str = RESULTS

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    # download and preprocess
    def raw_manifest(self, dataset: str) -> str:
        return self._path("raw", dataset, "MANIFEST.json")

    def npz(self, dataset: str) -> str:
        return self._path("data", f"{dataset}.npz")

    def card(self, dataset: str) -> str:
        return self._path("data", f"{dataset}.card.json")

    # tracking
    def tracking_marker(self) -> str:
        return self._path("mlflow", "tracking.json")

    def tracking_db(self) -> str:
        return self._path("mlflow", "mlflow.db")

    # train
    def run_dir(self, dataset: str, arch: str) -> str:
        return self._path("runs", dataset, arch)

    def train_outputs(self, dataset: str, arch: str) -> dict[str, str]:
        """model, history, metrics, run (run.json, written last) and tensorboard (a folder)."""
        run_dir = self.run_dir(dataset, arch)
        files = {name: f"{run_dir}/{file}" for name, file in TRAIN_FILES.items()}
        return files | {"tensorboard": f"{run_dir}/{TENSORBOARD}"}

    def checkpoint_dir(self, dataset: str, arch: str) -> str:
        return f"{self.run_dir(dataset, arch)}/{CHECKPOINT}"

    # evaluate
    def eval_dir(self, dataset: str, arch: str) -> str:
        return self._path("eval", dataset, arch)

    def eval_outputs(self, dataset: str, arch: str) -> dict[str, str]:
        eval_dir = self.eval_dir(dataset, arch)
        return {name: f"{eval_dir}/{file}" for name, file in EVAL_FILES.items()}

    # report
    def report_outputs(self) -> dict[str, str]:
        return {name: self._path("report", file) for name, file in REPORT_FILES.items()}

    def report_figure(self, kind: str, dataset: str) -> str:
        if kind not in REPORT_FIGURES:
            raise ValueError(f"no report figure {kind!r} (known: {', '.join(REPORT_FIGURES)})")
        return self._path("report", f"{kind}_{dataset}.png")

    # logs
    def log(self, rule: str, *parts: str) -> str:
        """``logs/<rule>.log``, or ``logs/<rule>/<part>/.../<last part>.log``."""
        if not parts:
            return self._path("logs", f"{rule}.log")
        return self._path("logs", rule, *parts[:-1], f"{parts[-1]}.log")
