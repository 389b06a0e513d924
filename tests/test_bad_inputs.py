"""The bad-input catalog: every mistake a user can make, through the entry point they use.

Each case asserts one line naming the cause on stderr (`afternoon: error: ...` from a stage,
`afternoon: ...` from the config check a dry run does), a non-zero exit, no partial output (no
temp file, no half-written npz/json/model) and nothing already finished changed: every case runs
in a directory that already holds a finished output, and the directory is the same afterwards.

Config cases: `snakemake -n --configfile` (the check runs before any job). Data and stage cases:
`python -m afternoon.cli <stage>`, as the rules run it. README "Troubleshooting" lists the
messages.
"""

import concurrent.futures
import contextlib
import copy
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers.components import missing
from helpers.data import (
    CIFAR_TRAIN_MEMBERS,
    balanced_labels,
    idx_bytes,
    make_cifar_archive,
    make_idx_dataset,
    write_bytes,
    write_manifest,
    write_truncated_gzip,
)
from helpers.httpserver import LoopbackServer
from helpers.paths import REPO
from helpers.runners import run_cli as cli  # cli(*args, env=, cwd=): as a rule runs it
from helpers.runners import run_snakemake
from helpers.stage_args import train_output_args

FINISHED = b'{"finished": "earlier, and must stay as it is"}\n'


# --- Helpers -------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str | None]:
    """Relative path -> sha256 (None for a directory) of everything under ``root``."""
    return {
        str(path.relative_to(root)): (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        )
        for path in sorted(root.rglob("*"))
        if ".snakemake" not in path.parts
    }


def finished_dir(path: Path, name: str = "finished.json") -> Path:
    """A directory holding one output of an earlier, successful run."""
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_bytes(FINISHED)
    return path


def one_error_line(result: subprocess.CompletedProcess, prefix: str, *needles: str) -> str:
    """The single ``prefix`` line on stderr (the last line, no traceback), naming ``needles``."""
    assert result.returncode != 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(prefix)]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    print(f"message: {errors[0]}")  # shown with -rP: README "Troubleshooting" quotes them
    for needle in needles:
        assert needle in errors[0]
    return errors[0]


# --- Config: `snakemake -n --configfile` ------------------------------------------------------

ZOO = yaml.safe_load((REPO / "config/zoo.yaml").read_text())
TINY = {
    "layers": [{"dense": {"units": 10, "activation": "softmax"}}],
    "optimizer": {"name": "adam"},
    "batch_size": 32,
    "epochs": 1,
}


def _tiny(**changes) -> dict:
    """A zoo of one architecture ``tiny`` with ``changes`` (a None value deletes the field)."""
    arch = copy.deepcopy(TINY) | changes
    return {"tiny": {k: v for k, v in arch.items() if v is not None}}


def _conv(kernel: int) -> dict:
    return {"conv2d": {"filters": 4, "kernel_size": kernel, "activation": "relu"}}


SOFTMAX = {"dense": {"units": 10, "activation": "softmax"}}
POOL = {"maxpool2d": {"pool_size": 2}}

# case: (config overrides, zoo (dict, or raw YAML text) or None for the shipped one, needles)
CONFIG_CASES = {
    "unknown key": ({"training": {"epochz": 3}}, None, ["unknown key training.epochz"]),
    "wrong type": ({"seed": "abc"}, None, ["key seed", "'abc' is not of type 'integer'"]),
    # what `--config training='{max_epochs: one}'` passes (a mapping's values arrive as text;
    # '1' would be read as the number the schema asks for)
    "text for a number": (
        {"training": {"max_epochs": "one"}},
        None,
        ["training.max_epochs", "'one' is not of type 'integer', 'null'"],
    ),
    "zero max_epochs": ({"training": {"max_epochs": 0}}, None, ["training.max_epochs", "0"]),
    "negative epochs_scale": (
        {"training": {"epochs_scale": -1}},
        None,
        ["training.epochs_scale", "-1"],
    ),
    "unknown dataset": ({"datasets": ["imagenet"]}, None, ["datasets.0", "'imagenet'"]),
    "architecture not in the zoo": ({"architectures": ["resnet"]}, None, ["'resnet'", "zoo"]),
    "architecture selected twice": (
        {"architectures": ["fc64", "fc64"]},
        None,
        ["architectures", "non-unique"],
    ),
    "zero epochs": ({}, _tiny(epochs=0), ["'tiny', epochs", "got 0"]),
    "negative batch size": ({}, _tiny(batch_size=-8), ["'tiny', batch_size", "got -8"]),
    "batch size as a string": ({}, _tiny(batch_size="32"), ["'tiny', batch_size", "'32'"]),
    "unknown layer type": (
        {},
        _tiny(layers=[{"conv3d": {"filters": 8}}, SOFTMAX]),
        ["'tiny', layers[0]", "unknown layer type 'conv3d'"],
    ),
    "missing required field": ({}, _tiny(optimizer=None), ["'tiny'", "'optimizer'"]),
    "duplicate architecture name": (
        {},
        "tiny:\n  epochs: 1\ntiny:\n  epochs: 2\n",
        ["zoo.yaml:3", "duplicate key 'tiny'"],
    ),
    "pool too big for the map": (
        {},
        _tiny(layers=[_conv(3), POOL, POOL, POOL, SOFTMAX]),
        ["'tiny', layers[3] (maxpool2d)", "too big", "(8, 8, 1) of digits"],
    ),
    "kernel larger than the image": (
        {},
        _tiny(layers=[_conv(9), SOFTMAX]),
        ["'tiny', layers[0] (conv2d)", "too big", "(8, 8, 1) of digits"],
    ),
    "last layer units != classes": (
        {},
        _tiny(layers=[{"dense": {"units": 7, "activation": "softmax"}}]),
        ["'tiny'", "7 units", "10 classes"],
    ),
    "malformed MLFLOW_TRACKING_URI": ({}, None, ["MLFLOW_TRACKING_URI 'http//x'", "no scheme"]),
    "password in tracking.uri": (
        {"tracking": {"uri": "https://alice:s3cret@mlflow.example.org/"}},
        None,
        ["tracking.uri 'https://mlflow.example.org/' holds a password", "MLFLOW_TRACKING_PASSWORD"],
    ),
    "activation Keras does not know": (
        {},
        _tiny(layers=[{"dense": {"units": 16, "activation": "relux"}}, SOFTMAX]),
        ["'tiny', layers[0].dense.activation: must be a Keras activation (", "got 'relux'"],
    ),
    "override for an unregistered dataset": (
        {},
        _tiny(datasets={"fashion-mnist": {"epochs": 40}}),
        [
            "zoo.yaml: architecture 'tiny', datasets: unknown dataset 'fashion-mnist'",
            "(known: digits, mnist, fashion_mnist, cifar10)",
        ],
    ),
    "reference accuracy of an unregistered dataset": (
        {},
        _tiny(reference_accuracy={"mnist": 97.5, "svhn": 95.0}),
        [
            "zoo.yaml: architecture 'tiny', reference_accuracy: unknown dataset 'svhn'",
            "known: digits",
        ],
    ),
    "val_ monitor without a validation split": (
        {"data": {"validation_fraction": 0}},
        _tiny(early_stopping={"monitor": "val_accuracy"}),
        [
            "zoo.yaml: architecture 'tiny', early_stopping.monitor: 'val_accuracy' needs a "
            "validation split (data.validation_fraction > 0)"
        ],
    ),
    "architecture name not a path component": (
        {},
        {"tiny net": TINY},
        ["zoo.yaml: architecture 'tiny net': the name must be letters, digits, _ . -"],
    ),
}
CONFIG_ENV = {"malformed MLFLOW_TRACKING_URI": {"MLFLOW_TRACKING_URI": "http//x"}}


def _study_dir(root: Path, overrides: dict, zoo) -> tuple[Path, Path]:
    """A working directory with the default config, a finished output, and a config override."""
    (root / "config").mkdir(parents=True)
    shutil.copy(REPO / "config/config.yaml", root / "config/config.yaml")
    finished_dir(root / "results/data", "digits.card.json")
    config = {"zoo": str(REPO / "config/zoo.yaml")} | copy.deepcopy(overrides)
    if zoo is not None:
        zoo_path = root / "zoo.yaml"
        zoo_path.write_text(zoo if isinstance(zoo, str) else yaml.safe_dump(zoo, sort_keys=False))
        config |= {"zoo": str(zoo_path), "architectures": ["tiny"]}
    configfile = root / "override.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    return root, configfile


def dry_run(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``snakemake -n`` of the repository's Snakefile in ``workdir``."""
    return run_snakemake(workdir, "-n", *args, env=env, check=False)


@pytest.fixture(scope="module")
def config_runs(tmp_path_factory):
    """Every config case's dry run (two at a time: each is a few seconds of Snakemake start-up),
    with the snapshot of its directory before the run."""

    def run(case):
        overrides, zoo, _ = CONFIG_CASES[case]
        workdir, configfile = _study_dir(tmp_path_factory.mktemp("config"), overrides, zoo)
        before = snapshot(workdir)
        result = dry_run(workdir, "--configfile", str(configfile), env=CONFIG_ENV.get(case))
        return case, (result, workdir, before)

    tmp_path_factory.getbasetemp()  # made once here: two threads making it at once can collide
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, CONFIG_CASES))


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_config_mistake_is_one_line_before_any_job(config_runs, case):
    result, workdir, before = config_runs[case]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    line = one_error_line(result, "afternoon: ", *CONFIG_CASES[case][2])
    assert "s3cret" not in line
    assert snapshot(workdir) == before  # nothing planned, written or removed


# --- Downloads: `afternoon.cli download` --------------------------------------------------------

MNIST_FIRST = "train-images-idx3-ubyte.gz"  # the first file of the registry's mnist entry
MNIST_FIRST_SIZE = 9912422


def _download(dest: Path, mirror: str) -> subprocess.CompletedProcess:
    return cli(
        "download",
        "mnist",
        "--manifest",
        str(dest / "MANIFEST.json"),
        "--mirror",
        mirror,
        "--retries",
        "0",
    )


@pytest.fixture
def raw_dir(tmp_path):
    """A download directory that holds the manifest of an earlier download."""
    return finished_dir(tmp_path / "raw", "MANIFEST.json")


def test_mirror_directory_missing(raw_dir, tmp_path):
    before = snapshot(raw_dir)
    result = _download(raw_dir, str(tmp_path / "no-such-mirror"))
    one_error_line(result, "afternoon: error:", "mirror directory", "no-such-mirror", "not exist")
    assert snapshot(raw_dir) == before


def test_checksum_mismatch(raw_dir, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "mnist").mkdir(parents=True)
    (mirror / "mnist" / MNIST_FIRST).write_bytes(b"\x1f\x8b" + bytes(MNIST_FIRST_SIZE - 2))
    before = snapshot(raw_dir)
    result = _download(raw_dir, str(mirror))
    one_error_line(result, "afternoon: error:", "sha256 mismatch", MNIST_FIRST, "expected 440fcabf")
    assert snapshot(raw_dir) == before


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A loopback HTTP mirror whose mnist train images have the registry's size (not its bytes)."""
    root = tmp_path_factory.mktemp("www")
    (root / "mnist").mkdir()
    (root / "mnist" / MNIST_FIRST).write_bytes(bytes(MNIST_FIRST_SIZE))
    with LoopbackServer(root) as server:
        yield server


def test_html_page_served_instead_of_data(raw_dir, served):
    served.html(f"/mnist/{MNIST_FIRST}")
    before = snapshot(raw_dir)
    result = _download(raw_dir, served.base_url)
    one_error_line(result, "afternoon: error:", "returned an HTML page", MNIST_FIRST, "127.0.0.1")
    assert snapshot(raw_dir) == before


def test_truncated_transfer(raw_dir, served):
    served.truncate(f"/mnist/{MNIST_FIRST}", 1000)
    before = snapshot(raw_dir)
    result = _download(raw_dir, served.base_url)
    one_error_line(result, "afternoon: error:", "truncated", "expected 9912422 bytes, got 1000")
    assert snapshot(raw_dir) == before


# --- Raw files: `afternoon.cli preprocess` ---------------------------------------------------


def _preprocess(dataset: str, manifest: Path | None, out: Path) -> subprocess.CompletedProcess:
    return cli(
        "preprocess",
        dataset,
        "--manifest",
        str(manifest or ""),
        "--npz",
        str(out / f"{dataset}.npz"),
        "--card",
        str(out / f"{dataset}.card.json"),
        "--validation-fraction",
        "0.1",
    )


def _bad_idx(raw: Path, case: str) -> dict[str, Path]:
    """Four small MNIST-named IDX files with one broken as ``case`` says."""
    paths, arrays = make_idx_dataset(raw, n_train=40, n_test=20)
    if case == "truncated gzip":
        write_truncated_gzip(paths["train_images"], arrays["x_train"])
    elif case == "wrong magic":
        magic = b"\x08\x03\x00\x00"
        write_bytes(paths["train_labels"], idx_bytes(arrays["y_train"], magic=magic))
    elif case == "count mismatch":
        write_bytes(paths["test_labels"], idx_bytes(balanced_labels(19)))
    return paths


IDX_CASES = {
    "truncated gzip": ["train-images-idx3-ubyte.gz", "truncated or corrupt gzip"],
    "wrong magic": ["train-labels-idx1-ubyte.gz", "not an IDX file (magic 0x08030000)"],
    "count mismatch": ["t10k-images", "20 images", "t10k-labels", "19 labels"],
}


@pytest.mark.parametrize("case", IDX_CASES)
def test_bad_idx_file(tmp_path, case):
    manifest = write_manifest(tmp_path / "MANIFEST.json", "mnist", _bad_idx(tmp_path / "raw", case))
    out = finished_dir(tmp_path / "data", "mnist.npz")
    before = snapshot(out)
    one_error_line(_preprocess("mnist", manifest, out), "afternoon: error:", *IDX_CASES[case])
    assert snapshot(out) == before


def test_cifar_record_of_the_wrong_length(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    make_cifar_archive(archive, overrides={CIFAR_TRAIN_MEMBERS[1]: bytes(3072 * 3)})
    manifest = write_manifest(tmp_path / "MANIFEST.json", "cifar10", {"archive": archive})
    out = finished_dir(tmp_path / "data", "cifar10.npz")
    before = snapshot(out)
    one_error_line(
        _preprocess("cifar10", manifest, out),
        "afternoon: error:",
        "cifar-10-binary.tar.gz",
        "data_batch_2.bin has 9216 bytes",
        "3073-byte record",
    )
    assert snapshot(out) == before


def test_unknown_dataset_on_the_command_line(tmp_path):
    out = finished_dir(tmp_path / "data")
    before = snapshot(out)
    result = _preprocess("imagenet", None, out)
    one_error_line(result, "afternoon: error:", "unknown dataset 'imagenet'", "known: digits")
    assert snapshot(out) == before


# --- Write failures: a read-only results directory, a full disk --------------------------------


@contextlib.contextmanager
def mounted(kind: str, where: Path):
    """``where`` as a read-only bind mount of itself, or a 64 KiB tmpfs; skips if mounting is
    not allowed here (not root, or a container without CAP_SYS_ADMIN), fails under CI=true."""
    command = {
        "readonly": ["mount", "--bind", "-o", "ro", str(where), str(where)],
        "full": ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
    }[kind]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        missing(f"cannot mount here ({' '.join(command)}): {result.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_results_directory_not_writable(tmp_path):
    out = finished_dir(tmp_path / "data", "digits.npz")
    before = snapshot(out)
    with mounted("readonly", out):
        result = _preprocess("digits", None, out)
        after = snapshot(out)
    one_error_line(
        result, "afternoon: error:", f"cannot write {out}/digits.npz", "Read-only file system"
    )
    assert after == before


def test_disk_full_while_writing_the_npz(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    with mounted("full", out):
        finished_dir(out, "digits.card.json")
        before = snapshot(out)
        result = _preprocess("digits", None, out)
        after = snapshot(out)
    one_error_line(
        result, "afternoon: error:", f"cannot write {out}/digits.npz", "No space left on device"
    )
    assert after == before


def test_disk_full_while_downloading(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "mnist").mkdir(parents=True)
    (mirror / "mnist" / MNIST_FIRST).write_bytes(bytes(MNIST_FIRST_SIZE))
    raw = tmp_path / "raw"
    raw.mkdir()
    with mounted("full", raw):
        finished_dir(raw, "MANIFEST.json")
        before = snapshot(raw)
        result = _download(raw, str(mirror))
        after = snapshot(raw)
    one_error_line(
        result, "afternoon: error:", f"cannot write {raw}/{MNIST_FIRST}", "No space left on device"
    )
    assert after == before


# --- Training inputs: a NaN npz, a loss that turns NaN, a malformed tracking URI --------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """digits preprocessed and a tracking store initialised, through the CLI, once."""
    root = tmp_path_factory.mktemp("digits")
    assert _preprocess("digits", None, root).returncode == 0
    marker = root / "mlflow" / "tracking.json"
    db = marker.with_name("mlflow.db")
    result = cli(
        "init-tracking",
        "--experiment",
        "bad-inputs",
        "--default-db",
        str(db),
        "--marker",
        str(marker),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return root


def _spec(**changes) -> dict:
    from afternoon.config import job_spec, load_zoo
    from afternoon.defaults import filled

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    spec = job_spec(config, load_zoo(REPO / "config/zoo.yaml"), "digits", "fc64")
    return filled(spec | changes, has_validation=True)


def _train(digits: Path, spec: dict, out: Path, npz: Path | None = None):
    return cli(
        "train",
        "--spec",
        json.dumps(spec),
        "--npz",
        str(npz or digits / "digits.npz"),
        "--card",
        str(digits / "digits.card.json"),
        "--tracking",
        str(digits / "mlflow" / "tracking.json"),
        *train_output_args(out),
        "--threads",
        "2",
    )


def test_npz_with_nan_is_refused_before_training(digits, tmp_path):
    with np.load(digits / "digits.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["x_train"] = arrays["x_train"].astype(np.float32)
    arrays["x_train"][0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    out = finished_dir(tmp_path / "run", "metrics.json")
    before = snapshot(out)
    result = _train(digits, _spec(epochs=1), out, npz=tmp_path / "nan.npz")
    one_error_line(result, "afternoon: error:", "nan.npz", "'x_train' contains NaN")
    assert snapshot(out) == before


EARLIER_RUN = ("model.keras", "history.csv", "metrics.json", "run.json")


def test_loss_turning_nan_stops_and_names_the_epoch(digits, tmp_path):
    spec = _spec(epochs=3, optimizer={"name": "sgd", "learning_rate": 1e12})
    out = tmp_path / "run"
    for name in EARLIER_RUN:  # the outputs of an earlier, good run of this job
        finished_dir(out, name)
    before = snapshot(out)
    result = _train(digits, spec, out)
    one_error_line(result, "afternoon: error:", "fc64 on digits: loss became nan at epoch 1")
    after = snapshot(out)
    assert {name: after[name] for name in EARLIER_RUN} == before  # none replaced
    # Nothing new: no TensorBoard events of the diverged run, no checkpoint, no temp file.
    assert after == before


@pytest.mark.parametrize(
    "uri, needles",
    [
        ("sqlite://relative.db", ["MLFLOW_TRACKING_URI 'sqlite://relative.db'", "sqlite:///"]),
        ("http//example.org", ["MLFLOW_TRACKING_URI 'http//example.org'", "no scheme"]),
        ("https://host:port/", ["MLFLOW_TRACKING_URI 'https://host:port/'", "port"]),
    ],
)
def test_malformed_tracking_uri(tmp_path, uri, needles):
    out = finished_dir(tmp_path / "mlflow", "tracking.json")
    before = snapshot(out)
    marker = out / "tracking.json"
    env = {"MLFLOW_TRACKING_URI": uri}
    db = str(marker.with_name("mlflow.db"))
    result = cli(
        "init-tracking", "--experiment", "x", "--default-db", db, "--marker", str(marker), env=env
    )
    one_error_line(result, "afternoon: error:", *needles)
    assert snapshot(out) == before
