"""Conda users (`--sdm conda`): training jobs get the environment `training.conda_env` names, and
the Slurm profile (which sends training to the GPU partition) names the CUDA build."""

import json
import os
import subprocess
import sys

import yaml

from helpers.paths import REPO

# The conda environment file of each rule, as Snakemake itself parses the workflow (its API, in a
# fresh process: no conda needed to read which environment a rule names).
RULE_ENVS = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    workflow = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(config=json.loads(sys.argv[1])),
        snakefile=Path("Snakefile"),
        workdir=Path("."),
    )
    envs = {rule.name: rule.conda_env for rule in workflow._workflow.rules if rule.conda_env}
print("ENVS " + json.dumps(envs))
"""

# The profile's YAML, evaluated as Snakemake evaluates it (yte), with the site's environment.
PROFILE_CONFIG = """
import json, yte
with open("profiles/slurm/config.yaml") as handle:
    print(json.dumps(yte.process_yaml(handle, require_use_yte=True)["config"]))
"""


def rule_envs(config: dict) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", RULE_ENVS, json.dumps(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("ENVS ")]
    return json.loads(line[len("ENVS ") :])


def profile_config(**env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROFILE_CONFIG], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_training_takes_the_configured_environment_and_the_rest_the_cpu_one():
    default = rule_envs({})
    assert default["train"] == "../../envs/afternoon.yaml"
    gpu = rule_envs({"training": {"conda_env": "afternoon-gpu"}})
    assert gpu["train"] == "../../envs/afternoon-gpu.yaml"
    # Replicates and searches train too: their trials (tune) and the best trial's retraining.
    training = ("train", "train_replicate", "tune", "train_search_best")
    assert {gpu[rule] for rule in training} == {"../../envs/afternoon-gpu.yaml"}
    others = {rule: env for rule, env in gpu.items() if rule not in training}
    assert set(others) == {"download", "preprocess", "init_tracking", "evaluate", "report",
                           "evaluate_replicate", "evaluate_search_best"}  # fmt: skip
    assert set(others.values()) == {"../../envs/afternoon.yaml"}


def test_the_slurm_profile_gives_gpu_training_the_cuda_build():
    config = profile_config()  # the profile's defaults: training on the GPU partition, 1 GPU
    assert config["training"]["conda_env"] == "afternoon-gpu"
    assert rule_envs(config)["train"] == "../../envs/afternoon-gpu.yaml"
    assert profile_config(AFTERNOON_SLURM_GPUS="0")["training"]["conda_env"] == "afternoon"


def test_the_gpu_environment_is_the_cpu_one_with_cuda():
    """Same pins, but TensorFlow with its CUDA wheels."""
    cpu, gpu = (yaml.safe_load((REPO / f"envs/{name}.yaml").read_text())
                for name in ("afternoon", "afternoon-gpu"))  # fmt: skip
    pins = {env: set(spec["dependencies"][-1]["pip"]) for env, spec in (("cpu", cpu), ("gpu", gpu))}
    assert pins["cpu"] - pins["gpu"] == {"tensorflow==2.18.1"}
    assert pins["gpu"] - pins["cpu"] == {"tensorflow[and-cuda]==2.18.1"}
