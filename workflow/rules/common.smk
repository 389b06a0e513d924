# Shared set-up: config validation (before any job), the zoo, per-job config slices, paths.
import json
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

# The logic lives in the importable package workflow/afternoon. Jobs run
# `python -m afternoon.cli ...` in whatever environment runs them (the venv, a conda env), so the
# package directory is exported to their PYTHONPATH, and this interpreter's bin to their PATH.
PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, PACKAGE_DIR)

from afternoon import export_package_path

export_package_path(PACKAGE_DIR)

from afternoon.checks import check_jobs, check_profile_batches, placement, precision_notes
from afternoon.config import (
    architectures_of,
    check_against_schema,
    job_spec,
    load_yaml,
    load_zoo,
    study_runs,
    typed_command_line_values,
)
from afternoon.defaults import distributed_settings, ranks_of
from afternoon.distributed.launch import launcher
from afternoon.errors import AfternoonError
from afternoon.layout import Layout, replicate_name
from afternoon.registry import dataset_entry
from afternoon.search.grammar import load_searches
from afternoon.search.jobs import LAUNCHER_VARIABLE, check_search_jobs, search_job, workers_of
from afternoon.tracking.uris import resolve_tracking_uri
from afternoon.zoo import ARCHITECTURE_PATTERN, dataset_pattern, reference_accuracy

SCHEMA = str(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
# Every path of the results tree comes from here (afternoon/layout.py).
LAYOUT = Layout()
# A rule's outputs for the wildcards {dataset} and {arch}; replicate i > 0 (config replicates)
# adds {replicate} (train_replicate, evaluate_replicate: layout.replicate_name).
TRAIN = LAYOUT.train_outputs("{dataset}", "{arch}")
EVAL = LAYOUT.eval_outputs("{dataset}", "{arch}")
TRAIN_REPLICATE = LAYOUT.train_outputs("{dataset}", "{arch}", "{replicate}")
EVAL_REPLICATE = LAYOUT.eval_outputs("{dataset}", "{arch}", "{replicate}")

try:
    # One line naming the key and the reason; Snakemake's own validate() then fills in defaults.
    # (A --config mapping's values arrive as strings: typed as the schema says first.)
    config.update(typed_command_line_values(config, load_yaml(SCHEMA)))
    check_against_schema(config, load_yaml(SCHEMA))
    validate(config, SCHEMA)
    ZOO = load_zoo(config["zoo"])
    # Per dataset the architectures it trains (dataset_architectures, else architectures).
    RUNS = study_runs(config, ZOO)
    ARCHITECTURES = architectures_of(RUNS)
    # (A distributed backend's package is looked for here unless the jobs get conda envs.)
    check_jobs(config, ZOO, RUNS, DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method)
    # A TensorBoard profile's steps (training.profile_batches) within each job's first epoch.
    check_profile_batches(config, ZOO, RUNS, LAYOUT.card)
    # Which precision the jobs use here, and why (auto: bf16 only where the hardware has it).
    for note in precision_notes(config, ZOO, RUNS):
        print(f"afternoon: {note}", file=sys.stderr)
    # A malformed tracking.uri or MLFLOW_TRACKING_URI stops the dry run, not a job later.
    resolve_tracking_uri(config["tracking"]["uri"], LAYOUT.tracking_db())
    # Hyperparameter searches: the whole file checked against the zoo, the selected ones named.
    # (A study that runs none needs no searches file.)
    SEARCHES = (
        load_searches(config["searches"]["file"], ZOO)
        if config["searches"]["run"] or Path(config["searches"]["file"]).exists()
        else {}
    )
    check_search_jobs(config, SEARCHES, ZOO)
except AfternoonError as err:
    sys.exit(f"afternoon: {err}")

DATASETS = config["datasets"]
# Each dataset x architecture trains this many times (seed + i); replicate 0 is rule train.
REPLICATES = config["replicates"]


def needs_download(dataset):
    return bool(dataset_entry(dataset)["files"])


def raw_manifest(wildcards):
    """The download manifest a preprocess job reads ([] for datasets shipped with a package)."""
    if needs_download(wildcards.dataset):
        return LAYOUT.raw_manifest(wildcards.dataset)
    return []


# (search, dataset) of every selected search: one tune job each.
SEARCH_RUNS = [(name, ds) for name in config["searches"]["run"] for ds in SEARCHES[name]["datasets"]]


def all_outputs():
    """Targets of the default rule: the study report (which needs every run evaluated)."""
    return list(LAYOUT.report_outputs().values())


def report_inputs(wildcards):
    """What the report reads: every run's training and evaluation outputs, the dataset cards, the
    tracking marker, and the report's own code (editing it reruns the report, and only it)."""
    paths = LAYOUT.report_paths(DATASETS, RUNS, REPLICATES)
    return {
        "train": [path for run in paths["runs"] for path in run["train"].values()],
        "evaluation": [path for run in paths["runs"] for path in run["eval"].values()],
        "cards": list(paths["cards"].values()),
        "tracking": paths["tracking"],
        # the report stage, the whole report wing and its templates
        "code": [
            f"{PACKAGE_DIR}/afternoon/stages/report.py",
            *sorted(str(path) for path in Path(PACKAGE_DIR, "afternoon/report").glob("*.py")),
            *sorted(str(path) for path in Path(PACKAGE_DIR, "afternoon/templates").glob("*.j2")),
        ],
        "searches": search_report_inputs(),
    }


def report_paths(wildcards):
    """Every path the report job reads and writes, as JSON (its inputs and outputs, explicit)."""
    paths = LAYOUT.report_paths(DATASETS, RUNS, REPLICATES)
    paths["searches"] = LAYOUT.search_report_paths(SEARCH_RUNS)
    return json.dumps(paths, sort_keys=True)


def report_settings(wildcards):
    """The report's config slice only (study, tracking URI, per architecture its description and
    the seed's accuracy per dataset, the searches' reference numbers): editing any of it reruns
    the report and nothing else."""
    architectures = [
        {
            "name": arch,
            "description": ZOO[arch].get("description", ""),
            "reference_accuracy": {ds: reference_accuracy(ZOO, arch, ds) for ds in DATASETS},
            "seed_gpu_seconds_per_epoch": ZOO[arch].get("seed_gpu_seconds_per_epoch"),
        }
        for arch in ARCHITECTURES
    ]
    settings = {
        "study": config["study"],
        "tracking_uri": config["tracking"]["uri"] or "",
        "datasets": DATASETS,
        "architectures": architectures,
        # Each selected search's published numbers (config/searches.yaml `reference`): report only.
        "search_references": {
            name: SEARCHES[name]["reference"] for name in config["searches"]["run"] if "reference" in SEARCHES[name]
        },
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
    """The config slice of this job only, every default it uses filled in: editing one
    architecture, or a default, retrains only the jobs whose slice it changes. A replicate
    i > 0 (rule train_replicate) trains with seed + i."""
    replicate = int(wildcards.get("replicate", 0))
    spec = job_spec(config, ZOO, wildcards.dataset, wildcards.arch, replicate)
    return json.dumps(spec, sort_keys=True)


# --- Data-parallel training: an architecture's `distributed.ranks` > 1 (backend multi_worker or
# horovod) makes its train job one job of that many processes. Snakemake's Slurm executor reads
# resources `mpi` (set: the command starts its own tasks) and `tasks`; locally both only shape
# the shell command. Backend mirrored is one process (over the node's GPUs): a plain job.
# Which command starts the processes (launch.launcher): a config key set to override it, else the
# executor profile's resource of that name (profiles/slurm: srun; resources, unlike a profile's
# `config:`, survive a `--config` on the command line), else this machine's.


def train_ranks(wildcards):
    """Processes (workers, ranks) of a training job: the architecture's distributed.ranks, else 1."""
    return ranks_of(job_spec(config, ZOO, wildcards.dataset, wildcards.arch))


def train_cpus_per_rank(wildcards, threads):
    """The job's cores shared by its ranks (None, i.e. unset, for a one-process job)."""
    ranks = train_ranks(wildcards)
    return max(1, threads // ranks) if ranks > 1 else None


def train_mpi(wildcards):
    """resources.mpi: the backend (multi_worker, horovod) of a job of several processes, which
    the Slurm executor then submits as one job of `tasks` tasks, leaving their start to the
    command; None (unset) for one process, which it submits as a plain job."""
    spec = job_spec(config, ZOO, wildcards.dataset, wildcards.arch)
    return distributed_settings(spec)["backend"] if ranks_of(spec) > 1 else None


def train_tasks(wildcards):
    """resources.tasks (sbatch --ntasks): the ranks, unless training.tasks_per_node places them."""
    ranks = train_ranks(wildcards)
    return None if ranks > 1 and placement(config["training"], "tasks_per_node") else ranks


def train_placement(wildcards, key):
    """resources.nodes / tasks_per_node of a job of several processes: config training.<key>."""
    return placement(config["training"], key) if train_ranks(wildcards) > 1 else None


def train_launcher(wildcards, threads, resources):
    """The shell prefix that starts the ranks: training.worker_launcher (multi_worker) or
    training.mpi_launcher (horovod), else the profile's resource of that name, else this
    machine's, then `-n RANKS`; '' for one process."""
    if not resources.get("mpi"):
        return ""
    key = "worker_launcher" if resources.mpi == "multi_worker" else "mpi_launcher"
    cpus = train_cpus_per_rank(wildcards, threads)
    return launcher(key, config["training"][key], resources.get(key), cpus, train_ranks(wildcards))


# --- Hyperparameter searches (search.smk): one tune job per selected search x its datasets.


def search_report_inputs():
    """What the report reads of each search: its table and summary, the best trial's retraining
    and evaluation (which makes Snakemake run them)."""
    runs = LAYOUT.search_report_paths(SEARCH_RUNS)
    return [path for run in runs for part in ("tune", "train", "eval") for path in run[part].values()]


def tune_spec(wildcards):
    """The search job's slice (the search, its base architecture on the dataset, the seed): editing
    the search or its base reruns it; editing another zoo entry or search does not."""
    return json.dumps(search_job(config, ZOO, SEARCHES, wildcards.search, wildcards.dataset), sort_keys=True)


def tune_workers(wildcards):
    return workers_of(SEARCHES[wildcards.search])


def tune_mpi(wildcards):
    """resources.mpi of a search of several workers: the Slurm executor then submits one job of
    `workers` tasks and runs the command (the chief) as is; the chief starts the workers."""
    return "search" if tune_workers(wildcards) > 1 else None


def tune_tasks(wildcards):
    """Tasks of a tune job: one per worker (the chief, idle, shares the batch step)."""
    return tune_workers(wildcards)


def tune_cpus_per_task(wildcards):
    """Each task (a worker) gets training.threads cores; unset for one worker (a plain job)."""
    return config["training"]["threads"] if tune_workers(wildcards) > 1 else None


def tune_threads(wildcards):
    """The cores of a tune job: training.threads per worker."""
    return config["training"]["threads"] * tune_workers(wildcards)


def tune_launcher(wildcards, resources):
    """`AFTERNOON_SEARCH_LAUNCHER='<prefix>'` before the command: what the chief starts its
    workers with (searches.launcher, else the profile's resource search_launcher, then
    `-n WORKERS`); '' where it starts them as local processes (a workstation, one worker)."""
    if not resources.get("mpi"):
        return ""
    threads, workers = config["training"]["threads"], tune_workers(wildcards)
    prefix = launcher(
        "search_launcher", config["searches"]["launcher"], resources.get("search_launcher"), threads, workers
    )
    return f"{LAUNCHER_VARIABLE}={shlex.quote(prefix)}" if prefix else ""
