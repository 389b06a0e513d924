# Shared set-up: config validation (before any job), the zoo, per-job config slices, paths.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

# The logic lives in the importable package workflow/afternoon. Jobs run
# `python -m afternoon.cli ...` in whatever environment runs them (the venv, a conda env), so the
# package directory is exported to their PYTHONPATH as well.
PACKAGE_DIR = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, PACKAGE_DIR)

from afternoon import export_package_path

export_package_path(PACKAGE_DIR)

from afternoon.config import (
    check_against_schema,
    job_spec,
    load_yaml,
    load_zoo,
    selected_architectures,
)
from afternoon.errors import AfternoonError
from afternoon.registry import dataset_entry

SCHEMA = str(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
RESULTS = "results"

try:
    # One line naming the key and the reason; Snakemake's own validate() then fills in defaults.
    check_against_schema(config, load_yaml(SCHEMA))
    validate(config, SCHEMA)
    ZOO = load_zoo(config["zoo"])
    ARCHITECTURES = selected_architectures(config, ZOO)
except AfternoonError as err:
    sys.exit(f"afternoon: {err}")

DATASETS = config["datasets"]



def needs_download(dataset):
    return bool(dataset_entry(dataset)["files"])


def raw_manifest(wildcards):
    """The download manifest a preprocess job reads ([] for datasets shipped with a package)."""
    if needs_download(wildcards.dataset):
        return f"{RESULTS}/raw/{wildcards.dataset}/MANIFEST.json"
    return []


def all_outputs():
    """Targets of the default rule: every dataset x architecture evaluated."""
    return expand(f"{RESULTS}/eval/{{dataset}}/{{arch}}/metrics.json", dataset=DATASETS, arch=ARCHITECTURES)


def mirror_option(wildcards):
    """`--mirror DIR|URL` when data.mirror is set (the manifest does not depend on it)."""
    return f"--mirror {config['data']['mirror']}" if config["data"]["mirror"] else ""


def train_spec(wildcards):
    """The config slice of this job only: editing one architecture retrains only it."""
    return json.dumps(job_spec(config, ZOO, wildcards.dataset, wildcards.arch), sort_keys=True)
