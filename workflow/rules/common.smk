# Shared set-up: config validation (before any job), the zoo, per-job config slices, paths.
import json
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

# The logic lives in the importable package workflow/afternoon. Jobs run
# `python -m afternoon.cli ...` in whatever environment runs them (the venv, a conda env), so the
# package directory is exported to their PYTHONPATH as well.
PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, PACKAGE_DIR)

from afternoon import export_package_path

export_package_path(PACKAGE_DIR)

from afternoon.config import check_against_schema, job_spec, load_yaml, load_zoo, selected_architectures
from afternoon.distributed.checks import placement
from afternoon.errors import AfternoonError
from afternoon.layout import Layout
from afternoon.registry import dataset_entry
from afternoon.tracking.uris import resolve_tracking_uri
from afternoon.zoo import (
    ARCHITECTURE_PATTERN,
    check_jobs,
    dataset_pattern,
    distributed_settings,
    ranks_of,
    reference_accuracy,
)

SCHEMA = str(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
# Every path of the results tree comes from here (afternoon/layout.py).
LAYOUT = Layout()
# A rule's outputs for the wildcards {dataset} and {arch}.
TRAIN = LAYOUT.train_outputs("{dataset}", "{arch}")
EVAL = LAYOUT.eval_outputs("{dataset}", "{arch}")

try:
    # One line naming the key and the reason; Snakemake's own validate() then fills in defaults.
    check_against_schema(config, load_yaml(SCHEMA))
    validate(config, SCHEMA)
    ZOO = load_zoo(config["zoo"])
    ARCHITECTURES = selected_architectures(config, ZOO)
    # (A distributed backend's package is looked for here unless the jobs get conda envs.)
    check_jobs(config, ZOO, ARCHITECTURES, DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method)
    # A malformed tracking.uri or MLFLOW_TRACKING_URI stops the dry run, not a job later.
    resolve_tracking_uri(config["tracking"]["uri"], LAYOUT.tracking_db())
except AfternoonError as err:
    sys.exit(f"afternoon: {err}")

DATASETS = config["datasets"]


def needs_download(dataset):
    return bool(dataset_entry(dataset)["files"])


def raw_manifest(wildcards):
    """The download manifest a preprocess job reads ([] for datasets shipped with a package)."""
    if needs_download(wildcards.dataset):
        return LAYOUT.raw_manifest(wildcards.dataset)
    return []


def all_outputs():
    """Targets of the default rule: the study report (which needs every run evaluated)."""
    return list(LAYOUT.report_outputs().values())


def report_inputs(wildcards):
    """What the report reads: every run's training and evaluation outputs, the dataset cards, the
    tracking marker, and the report's own code (editing it reruns the report, and only it)."""
    paths = LAYOUT.report_paths(DATASETS, ARCHITECTURES)
    return {
        "train": [path for run in paths["runs"] for path in run["train"].values()],
        "evaluation": [path for run in paths["runs"] for path in run["eval"].values()],
        "cards": list(paths["cards"].values()),
        "tracking": paths["tracking"],
        "code": [f"{PACKAGE_DIR}/afternoon/stages/report.py", f"{PACKAGE_DIR}/afternoon/templates/report.html.j2"],
    }


def report_paths(wildcards):
    """Every path the report job reads and writes, as JSON (its inputs and outputs, explicit)."""
    return json.dumps(LAYOUT.report_paths(DATASETS, ARCHITECTURES), sort_keys=True)


def report_settings(wildcards):
    """The report's config slice only (study, tracking URI, per architecture its description and
    the seed's accuracy per dataset): editing any of it reruns the report and nothing else."""
    architectures = [
        {
            "name": arch,
            "description": ZOO[arch].get("description", ""),
            "reference_accuracy": {ds: reference_accuracy(ZOO, arch, ds) for ds in DATASETS},
        }
        for arch in ARCHITECTURES
    ]
    settings = {
        "study": config["study"],
        "tracking_uri": config["tracking"]["uri"] or "",
        "datasets": DATASETS,
        "architectures": architectures,
    }
    return json.dumps(settings, sort_keys=True)


def report_figures(kind, caption, category):
    """One PNG per dataset, marked for Snakemake's report."""
    figures = []
    for dataset in DATASETS:
        labels = {"dataset": dataset, "figure": kind.replace("_", " ")}
        path = LAYOUT.report_figure(kind, dataset)
        figures.append(report(path, caption=caption, category=category, subcategory=dataset, labels=labels))
    return figures


def mirror_option(wildcards):
    """`--mirror DIR|URL` when data.mirror is set (the manifest does not depend on it)."""
    return f"--mirror {config['data']['mirror']}" if config["data"]["mirror"] else ""


def train_spec(wildcards):
    """The config slice of this job only: editing one architecture retrains only it."""
    return json.dumps(job_spec(config, ZOO, wildcards.dataset, wildcards.arch), sort_keys=True)


# --- Data-parallel training: an architecture's `distributed.ranks` > 1 (backend multi_worker or
# horovod) makes its train job one job of that many processes. Snakemake's Slurm executor reads
# resources `mpi` (set: the command starts its own tasks) and `tasks`; locally both only shape
# the shell command. Backend mirrored is one process (over the node's GPUs): a plain job.


def train_ranks(wildcards):
    """Processes (workers, ranks) of a training job: the architecture's distributed.ranks, else 1."""
    return ranks_of(job_spec(config, ZOO, wildcards.dataset, wildcards.arch))


def train_cpus_per_rank(wildcards, threads):
    """The job's cores shared by its ranks (None, i.e. unset, for a one-process job)."""
    ranks = train_ranks(wildcards)
    return max(1, threads // ranks) if ranks > 1 else None


def train_mpi(wildcards, threads):
    """resources.mpi: the launcher of a job of several processes ('{cpus}' -> cores per rank):
    training.worker_launcher (multi_worker) or training.mpi_launcher (horovod); None (unset) for
    one process, which the Slurm executor then submits as a plain job."""
    cpus = train_cpus_per_rank(wildcards, threads)
    if cpus is None:
        return None
    spec = job_spec(config, ZOO, wildcards.dataset, wildcards.arch)
    key = "worker_launcher" if distributed_settings(spec)["backend"] == "multi_worker" else "mpi_launcher"
    return config["training"][key].replace("{cpus}", str(cpus))


def train_tasks(wildcards):
    """resources.tasks (sbatch --ntasks): the ranks, unless training.tasks_per_node places them."""
    ranks = train_ranks(wildcards)
    return None if ranks > 1 and placement(config["training"], "tasks_per_node") else ranks


def train_placement(wildcards, key):
    """resources.nodes / tasks_per_node of a job of several processes: config training.<key>."""
    return placement(config["training"], key) if train_ranks(wildcards) > 1 else None


def train_launcher(wildcards, resources):
    """The shell prefix that starts the ranks, `{resources.mpi} -n RANKS`; '' for one process."""
    mpi = resources.get("mpi")
    return f"{mpi} -n {train_ranks(wildcards)}" if mpi else ""
