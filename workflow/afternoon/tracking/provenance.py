"""What a tracked run records about itself: flattened params, a config hash, provenance tags
(git, host, package versions, Slurm job), with credentials and secret values redacted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import socket
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|KEY|AUTH", re.IGNORECASE)
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]+@")
_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu"), "mlflow": ()}
_PACKAGES.update({name: () for name in ("tf_keras", "numpy", "snakemake", "horovod", "afternoon")})
_SLURM = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST")


def strip_credentials(uri: str) -> str:
    """``scheme://user:pw@host/...`` -> ``scheme://host/...``, anywhere in the text."""
    return _CREDENTIALS.sub(r"\1", str(uri))


def redact(value) -> str:
    """``value`` as text, without URI credentials or the value of a secret-looking env var."""
    text = strip_credentials(str(value))
    secrets = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 4}
    for secret in sorted(secrets - {"true", "false", "True", "False"}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def first_line(err: BaseException) -> str:
    """The first line of an error's message (redacted, at most 300 characters)."""
    return redact((str(err).strip().splitlines() or [repr(err)])[0])[:300]


def run_name(spec: dict, fallback_name: str = "", fallback_dataset: str = "") -> str:
    """A training run's MLflow name: ``<arch>@<dataset>``, and ``#r<i>`` for replicate i > 0
    (config replicates). ``attributes.run_name LIKE '<arch>@<dataset>%'`` selects every
    replicate of one architecture on one dataset in the MLflow UI."""
    name = f"{spec.get('name', fallback_name)}@{spec.get('dataset', fallback_dataset)}"
    replicate = int(spec.get("replicate", 0))
    return f"{name}#r{replicate}" if replicate else name


def flatten_params(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested mappings -> dotted keys; lists of mappings -> indexed keys; other values -> str."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name) if value else {name: "{}"})
        elif isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
            out.update(flatten_params(dict(enumerate(value)), name))
        else:
            is_list = isinstance(value, list | tuple)
            out[name] = json.dumps(list(value), default=str) if is_list else str(value)
    return out


def config_hash(obj) -> str:
    """sha256 (hex) of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _git(repo: Path, *args: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=30)
        return done.stdout.decode().strip() if done.returncode == 0 else None
    return None


def _version(name: str, *dists: str) -> str | None:
    for dist in dists or (name,):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return None


def provenance_tags(repo: Path | None = None, extra: dict | None = None) -> dict[str, str]:
    """Where a run came from: git state, host, versions, Slurm job, plus ``extra`` (redacted)."""
    repo = repo or Path(__file__).parent  # git finds the checkout the package lies in
    commit = _git(repo, "rev-parse", "HEAD") or "unknown"
    status = _git(repo, "status", "--porcelain")
    dirty = "unknown" if status is None else str(bool(status)).lower()
    tags = dict(git_commit=commit, git_dirty=dirty, hostname=socket.gethostname())
    tags["python"] = platform.python_version()
    for name, dists in _PACKAGES.items():
        if version := _version(name, *dists):
            tags[f"version.{name}"] = version
    tags.update({var.lower(): os.environ[var] for var in _SLURM if os.environ.get(var)})
    for key, value in (extra or {}).items():
        as_json = isinstance(value, Mapping | list)
        tags[key] = json.dumps(value, sort_keys=True, default=str) if as_json else str(value)
    out = {k if k.startswith(("afternoon.", "mlflow.")) else f"afternoon.{k}": redact(v)
           for k, v in tags.items()}  # fmt: skip
    if commit != "unknown":
        out["mlflow.source.git.commit"] = commit
    return out
