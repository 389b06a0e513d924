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
      runs/<dataset>/<arch>@r<i>/      train_replicate: replicate i > 0 (config replicates,
                                         seed + i), the same files (``replicate_name``)
      eval/<dataset>/<arch>/           evaluate: metrics.json confusion_matrix.{csv,png}
                                         per_class.csv misclassified.{png,csv}
      eval/<dataset>/<arch>@r<i>/      evaluate_replicate: the same files
      search/<name>/<dataset>/         tune: trials.csv summary.json best.yaml best_spec.json
                                         tensorboard/ (the HParams dashboard) and state/ (Keras
                                         Tuner's oracle, trials/<id>/: checkpoints)
      search/<name>/<dataset>/best/    train_search_best: the best trial retrained (train's files)
      search/<name>/<dataset>/best-eval/  evaluate_search_best: evaluate's files
      report/                          report: index.html scores.csv scores.md
                                         learning_curves_<dataset>.png overfitting_<dataset>.png
                                         pareto_<dataset>.png
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
REPORT_FIGURES = ("learning_curves", "overfitting", "pareto")  # one PNG per dataset each
# What the report reads of each run's train and evaluate outputs.
REPORT_READS = {"train": ("metrics", "history", "run"), "eval": ("metrics", "confusion_png",
                                                                  "misclassified_png")}  # fmt: skip
SEARCH_FILES = {  # a search's outputs (the tune rule's output keys)
    "trials": "trials.csv",
    "summary": "summary.json",
    "best": "best.yaml",
    "best_spec": "best_spec.json",
    "tensorboard": TENSORBOARD,  # the HParams dashboard's folder (search.hparams)
}
# How to open every run's TensorBoard logs (the Makefile's target; the report says it).
TENSORBOARD_COMMAND = "make tensorboard"
PENDING = "pending"  # beside the tracking marker: the ledger sync-tracking reads


def replicate_name(arch: str, replicate: int | str = 0) -> str:
    """The folder (and log) name of replicate ``replicate`` of ``arch``: ``arch`` itself for
    replicate 0 (the paths of a study without replicates, so adding replicates reruns nothing
    that exists), ``<arch>@r<i>`` for the others, beside it. ``replicate`` may be a wildcard."""
    return arch if str(replicate) == "0" else f"{arch}@r{replicate}"


def train_job_files(run_dir: str) -> dict[str, str]:
    """A train job's files in ``run_dir``: its outputs and its checkpoint folder."""
    files = {name: f"{run_dir}/{file}" for name, file in TRAIN_FILES.items()}
    return files | {
        "tensorboard": f"{run_dir}/{TENSORBOARD}",
        "checkpoint": f"{run_dir}/{CHECKPOINT}",
    }


def eval_job_files(eval_dir: str) -> dict[str, str]:
    """An evaluate job's outputs in ``eval_dir``."""
    return {name: f"{eval_dir}/{file}" for name, file in EVAL_FILES.items()}


@dataclass(frozen=True)
class Layout:
    """The paths of one results tree (``root``); dataset, arch and replicate may be Snakemake
    wildcards such as ``"{dataset}"``. Replicate 0 is the run a study without replicates has."""

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
    def runs_root(self) -> str:
        """The folder of every run of the study (``make tensorboard`` reads it whole)."""
        return self._path("runs")

    def run_dir(self, dataset: str, arch: str, replicate: int | str = 0) -> str:
        return self._path("runs", dataset, replicate_name(arch, replicate))

    def train_outputs(self, dataset: str, arch: str, replicate: int | str = 0) -> dict[str, str]:
        """model, history, metrics, run (run.json, written last) and tensorboard (a folder)."""
        files = train_job_files(self.run_dir(dataset, arch, replicate))
        return {name: path for name, path in files.items() if name != "checkpoint"}

    def checkpoint_dir(self, dataset: str, arch: str, replicate: int | str = 0) -> str:
        return train_job_files(self.run_dir(dataset, arch, replicate))["checkpoint"]

    # evaluate
    def eval_dir(self, dataset: str, arch: str, replicate: int | str = 0) -> str:
        return self._path("eval", dataset, replicate_name(arch, replicate))

    def eval_outputs(self, dataset: str, arch: str, replicate: int | str = 0) -> dict[str, str]:
        return eval_job_files(self.eval_dir(dataset, arch, replicate))

    # search (tune, then the best trial retrained and evaluated)
    def search_dir(self, search: str, dataset: str) -> str:
        return self._path("search", search, dataset)

    def search_outputs(self, search: str, dataset: str) -> dict[str, str]:
        return {
            name: f"{self.search_dir(search, dataset)}/{file}"
            for name, file in SEARCH_FILES.items()
        }

    def search_state_dir(self, search: str, dataset: str) -> str:
        """Keras Tuner's oracle and the trials' checkpoints: not an output (kept on failure)."""
        return f"{self.search_dir(search, dataset)}/state"

    def search_best_train(self, search: str, dataset: str) -> dict[str, str]:
        """The best trial retrained: the train stage's files (checkpoint included)."""
        return train_job_files(f"{self.search_dir(search, dataset)}/best")

    def search_best_eval(self, search: str, dataset: str) -> dict[str, str]:
        return eval_job_files(f"{self.search_dir(search, dataset)}/best-eval")

    def search_report_paths(self, runs: list[tuple[str, str]]) -> list[dict]:
        """Per (search, dataset): the files the report reads of its tune job (``tune``) and of
        the best trial's retraining (``train``) and evaluation (``eval``)."""
        paths = []
        for search, dataset in runs:
            train = self.search_best_train(search, dataset)
            evaluation = self.search_best_eval(search, dataset)
            paths.append({
                "search": search,
                "dataset": dataset,
                "tune": self.search_outputs(search, dataset),
                "train": {name: train[name] for name in REPORT_READS["train"]},
                "eval": {name: evaluation[name] for name in REPORT_READS["eval"]},
            })  # fmt: skip
        return paths

    # report
    def report_outputs(self) -> dict[str, str]:
        return {name: self._path("report", file) for name, file in REPORT_FILES.items()}

    def report_paths(
        self, datasets: list[str], archs: list[str] | dict[str, list[str]], replicates: int = 1
    ) -> dict:
        """Every path the report job reads and writes: ``tracking`` (the marker), ``cards`` (per
        dataset), ``runs`` (per run its dataset, arch, replicate and the ``train`` and ``eval``
        files of ``REPORT_READS``), ``outputs`` (``REPORT_FILES``), ``figures`` (per dataset and
        kind). ``archs``: the architectures of every dataset, or per dataset its own;
        ``replicates``: the runs of each (config replicates)."""
        runs = []
        for dataset in datasets:
            for arch in archs[dataset] if isinstance(archs, dict) else archs:
                for replicate in range(replicates):
                    train, evaluation = (
                        self.train_outputs(dataset, arch, replicate),
                        self.eval_outputs(dataset, arch, replicate),
                    )
                    run = {"dataset": dataset, "arch": arch, "replicate": replicate}
                    run["train"] = {name: train[name] for name in REPORT_READS["train"]}
                    run["eval"] = {name: evaluation[name] for name in REPORT_READS["eval"]}
                    runs.append(run)
        figures = {
            ds: {kind: self.report_figure(kind, ds) for kind in REPORT_FIGURES} for ds in datasets
        }
        return {
            "tracking": self.tracking_marker(),
            "cards": {dataset: self.card(dataset) for dataset in datasets},
            "runs": runs,
            "outputs": self.report_outputs(),
            "figures": figures,
        }

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
