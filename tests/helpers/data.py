"""Tiny synthetic raw datasets for tests: IDX files, a fake CIFAR-10 binary tar.gz, manifests.

Import from a test module (``tests/`` is on sys.path under pytest)::

    from helpers.data import make_idx_dataset, write_manifest

Every writer returns what it wrote, so a test can assert exact round-trip values.
"""

import gzip
import hashlib
import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np

from afternoon.registry import dataset_entry
from helpers.components import need_mnist

CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN_MEMBERS = [f"{CIFAR_DIR}/data_batch_{i}.bin" for i in range(1, 6)]
CIFAR_TEST_MEMBER = f"{CIFAR_DIR}/test_batch.bin"
CIFAR_RECORD = 3073

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08, magic: bytes | None = None) -> bytes:
    """The IDX encoding of ``array``: 00 00 <dtype_code> <ndim>, big-endian u32 dims, data.

    ``magic`` (4 bytes) replaces the whole magic number, to make wrong-magic files. The data
    bytes are ``array.tobytes()`` whatever ``dtype_code`` says (for unsupported-dtype files).
    """
    array = np.asarray(array)
    head = magic if magic is not None else bytes([0, 0, dtype_code, array.ndim])
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return head + dims + array.tobytes()


def write_bytes(path: Path, data: bytes, gz: bool | None = None) -> Path:
    """Write ``data`` to ``path``, gzip'd when ``gz`` (default: when the name ends in .gz)."""
    path = Path(path)
    if gz is None:
        gz = path.suffix == ".gz"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def write_idx(path: Path, array: np.ndarray, gz: bool | None = None, **kwargs) -> Path:
    """Write a valid IDX file (gzip'd when the name ends in .gz); kwargs go to ``idx_bytes``."""
    return write_bytes(path, idx_bytes(array, **kwargs), gz=gz)


def write_truncated_idx(path: Path, array: np.ndarray, drop: int = 5) -> Path:
    """An IDX file whose header promises ``array.shape`` but whose data lacks ``drop`` bytes."""
    return write_bytes(path, idx_bytes(array)[:-drop])


def write_truncated_gzip(path: Path, array: np.ndarray, keep_fraction: float = 0.5) -> Path:
    """A gzip'd IDX file cut after ``keep_fraction`` of its compressed bytes (a broken gzip)."""
    data = gzip.compress(idx_bytes(array), mtime=0)
    Path(path).write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return Path(path)


def random_images(n: int, shape: tuple = (28, 28), seed: int = 0) -> np.ndarray:
    """``n`` random uint8 images of ``shape`` (N, *shape)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


def balanced_labels(n: int, n_classes: int = 10, seed: int = 0) -> np.ndarray:
    """``n`` uint8 labels, every class as equally often as possible, in shuffled order."""
    labels = np.arange(n, dtype=np.uint8) % n_classes
    return np.random.default_rng(seed).permutation(labels).astype(np.uint8)


def make_idx_dataset(
    directory: Path,
    n_train: int = 40,
    n_test: int = 20,
    shape: tuple = (28, 28),
    gz: bool = True,
    seed: int = 0,
) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """Four IDX files (MNIST names) in ``directory``: (paths by role, arrays x/y_train/test).

    The returned image arrays are (N, H, W) as written, without the channel axis.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": random_images(n_train, shape, seed),
        "y_train": balanced_labels(n_train, seed=seed),
        "x_test": random_images(n_test, shape, seed + 1),
        "y_test": balanced_labels(n_test, seed=seed + 1),
    }
    keys = {"train_images": "x_train", "train_labels": "y_train"}
    keys |= {"test_images": "x_test", "test_labels": "y_test"}
    paths = {}
    for role, key in keys.items():
        name = IDX_NAMES[role] if gz else IDX_NAMES[role].removesuffix(".gz")
        paths[role] = write_idx(directory / name, arrays[key])
    return paths, arrays


def cifar_member_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10 records for N,32,32,3 images: per record a label byte, then R, G, B planes."""
    planes = np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2).reshape(len(images), -1)
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None], planes], axis=1)
    return records.tobytes()


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    """A tar.gz holding ``members`` (name -> bytes), in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


def make_cifar_archive(
    path: Path,
    per_batch: int = 3,
    n_test: int = 4,
    seed: int = 0,
    overrides: dict[str, bytes | None] | None = None,
) -> dict[str, np.ndarray]:
    """A fake ``cifar-10-binary.tar.gz`` with the real member names and ``per_batch`` records
    in each of data_batch_1..5 and ``n_test`` in test_batch; returns the expected arrays
    x_train (5*per_batch,32,32,3), y_train, x_test, y_test.

    ``overrides`` maps a member name to replacement bytes, or to None to leave it out
    (the returned arrays then describe the unmodified archive).
    """
    rng = np.random.default_rng(seed)
    members, xs, ys = {}, [], []
    for name in CIFAR_TRAIN_MEMBERS:
        x = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=per_batch, dtype=np.uint8)
        members[name] = cifar_member_bytes(x, y)
        xs.append(x)
        ys.append(y)
    x_test = rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    y_test = rng.integers(0, 10, size=n_test, dtype=np.uint8)
    members[CIFAR_TEST_MEMBER] = cifar_member_bytes(x_test, y_test)
    members = {f"{CIFAR_DIR}/batches.meta.txt": b"airplane\nautomobile\n"} | members
    for name, data in (overrides or {}).items():
        if data is None:
            members.pop(name, None)
        else:
            members[name] = data
    write_tar_gz(path, members)
    return {
        "x_train": np.concatenate(xs),
        "y_train": np.concatenate(ys),
        "x_test": x_test,
        "y_test": y_test,
    }


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_manifest(path: Path, dataset: str, files_by_role: dict[str, Path]) -> Path:
    """A download manifest like the download step writes: {"dataset", "files": [...]} with
    name, role, url, source, size, sha256 and (absolute) path for each file."""
    files = []
    for role, file in files_by_role.items():
        file = Path(file).resolve()
        files.append(
            {
                "name": file.name,
                "role": role,
                "url": f"https://example.invalid/{file.name}",
                "source": "test fixture",
                "size": file.stat().st_size,
                "sha256": sha256_of(file),
                "path": str(file),
            }
        )
    Path(path).write_text(json.dumps({"dataset": dataset, "files": files}, indent=2))
    return Path(path)


# The real MNIST files beside the checkout (../shared/data/mnist): names by role (the registry's).
MNIST_FILES = {f["role"]: f["name"] for f in dataset_entry("mnist")["files"]}


def real_mnist_files() -> dict[str, Path]:
    """The real MNIST files by role; where ../shared/data/mnist is missing, the test skips
    (fails under CI=true: helpers.components.missing)."""
    __tracebackhide__ = True
    directory = need_mnist()
    return {role: directory / name for role, name in MNIST_FILES.items()}
