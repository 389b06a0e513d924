"""Parsers for the raw dataset formats: IDX (MNIST, Fashion-MNIST), CIFAR-10 binary, sklearn digits.

Every parser returns uint8 arrays and raises DataFormatError (naming the file) for a bad file.
No pickle anywhere: CIFAR-10 is read from its fixed-length binary records.
"""

import gzip
import tarfile
import zlib
from pathlib import Path

import numpy as np

from afternoon.errors import ConfigError, DataFormatError

IDX_DTYPES = {
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
IDX_ROLES = ("train_images", "train_labels", "test_images", "test_labels")

CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_TRAIN = tuple(f"{CIFAR10_DIR}/data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = f"{CIFAR10_DIR}/test_batch.bin"
CIFAR10_RECORD = 1 + 3 * 32 * 32
CIFAR10_CLASSES = 10


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (1f 8b)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, OSError, zlib.error) as exc:
        raise DataFormatError(f"{path}: truncated or corrupt gzip ({exc})") from exc


def read_idx(path: Path | str) -> np.ndarray:
    """One IDX file (plain or gzip'd) as a uint8 array of the shape its header gives."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataFormatError(f"{path}: not an IDX file (magic 0x{data[:4].hex() or 'empty'})")
    code, ndim = data[2], data[3]
    if code != 0x08:
        kind = IDX_DTYPES.get(code, "unknown")
        raise DataFormatError(
            f"{path}: IDX dtype code 0x{code:02x} ({kind}) is not supported, only 0x08 (uint8)"
        )
    if ndim == 0:
        raise DataFormatError(f"{path}: IDX header has 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(
            f"{path}: truncated IDX header (expected {header} bytes, got {len(data)})"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(data) - header
    if actual != expected:
        what = "truncated data" if actual < expected else "trailing bytes after the data"
        raise DataFormatError(
            f"{path}: {what}: dims {dims} need {expected} bytes, file has {actual} after the header"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_dataset(files_by_role: dict[str, Path]) -> dict[str, np.ndarray]:
    """The four IDX files (by role) as x_train (N,H,W,1), y_train (N,), x_test, y_test; uint8."""
    missing = [role for role in IDX_ROLES if role not in files_by_role]
    if missing:
        raise ConfigError(f"IDX dataset is missing file role(s): {', '.join(missing)}")
    out = {}
    for split in ("train", "test"):
        img_path = Path(files_by_role[f"{split}_images"])
        lab_path = Path(files_by_role[f"{split}_labels"])
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3:
            raise DataFormatError(f"{img_path}: images must be 3-D (N,H,W), got {images.shape}")
        if labels.ndim != 1:
            raise DataFormatError(f"{lab_path}: labels must be 1-D (N,), got {labels.shape}")
        if len(images) != len(labels):
            raise DataFormatError(
                f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels"
            )
        out[f"x_{split}"] = images[..., np.newaxis]
        out[f"y_{split}"] = labels
    return out


def _parse_cifar10_member(archive: Path, name: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    if len(data) == 0 or len(data) % CIFAR10_RECORD:
        raise DataFormatError(
            f"{archive}: member {name} has {len(data)} bytes, "
            f"not a positive multiple of the {CIFAR10_RECORD}-byte record"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].copy()
    if labels.max() >= CIFAR10_CLASSES:
        bad = int(np.argmax(labels >= CIFAR10_CLASSES))
        raise DataFormatError(
            f"{archive}: member {name} record {bad} has label {labels[bad]} "
            f"(expected 0..{CIFAR10_CLASSES - 1})"
        )
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar10_binary(archive_path: Path | str) -> dict[str, np.ndarray]:
    """CIFAR-10 binary tar.gz -> x_train (50000,32,32,3), y_train, x_test, y_test; uint8.

    Members are read straight from the (streamed) tarfile in one pass; nothing is extracted.
    """
    archive = Path(archive_path)
    wanted = set(CIFAR10_TRAIN) | {CIFAR10_TEST}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    fh = tar.extractfile(member)
                    data = fh.read()
                    if len(data) != member.size:
                        raise DataFormatError(
                            f"{archive}: member {member.name} truncated "
                            f"(expected {member.size} bytes, got {len(data)})"
                        )
                    found[member.name] = data
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataFormatError(f"{archive}: truncated or corrupt tar.gz archive ({exc})") from exc
    missing = sorted(wanted - set(found))
    if missing:
        raise DataFormatError(f"{archive}: missing member(s) {', '.join(missing)}")
    train = [_parse_cifar10_member(archive, name, found.pop(name)) for name in CIFAR10_TRAIN]
    x_test, y_test = _parse_cifar10_member(archive, CIFAR10_TEST, found.pop(CIFAR10_TEST))
    return {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }


def load_digits_arrays(test_fraction: float, seed: int = 0) -> dict[str, np.ndarray]:
    """sklearn's 1797 8x8 digits, scaled 0..16 -> 0..255 uint8 (N,8,8,1), stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if isinstance(test_fraction, bool) or not 0 < test_fraction < 1:
        raise ConfigError(f"digits test_fraction must be in (0, 1), got {test_fraction!r}")
    digits = load_digits()
    images = np.rint(digits.images * 255.0 / 16.0).astype(np.uint8)[..., np.newaxis]
    labels = digits.target.astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
