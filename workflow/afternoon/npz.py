"""A preprocessed dataset on disk: one npz of six uint8 arrays (x/y of train, val, test), written
by the preprocess stage and read, checked, by training and evaluation."""

import os
import zipfile
from pathlib import Path

import numpy as np

from afternoon.errors import DataFormatError

SPLITS = ("train", "val", "test")
KEYS = tuple(f"{p}_{s}" for s in SPLITS for p in ("x", "y"))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez`` writes (stored ``<key>.npy`` members, no pickle), flushed to disk; the
    zip is closed even when a write fails (np.savez leaves it to the garbage collector, which
    then prints a traceback for a full disk)."""
    with open(path, "wb") as fh:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, array in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _check_array(path: Path, key: str, arr: np.ndarray) -> None:
    """uint8 and 4-D images / 1-D labels; NaN (a float npz not written by preprocess) named."""
    want = 4 if key.startswith("x_") else 1
    if arr.dtype.kind in "fc" and np.isnan(arr).any():
        raise DataFormatError(
            f"{path}: array {key!r} contains NaN ({arr.dtype}); a preprocessed npz holds uint8 "
            "only: run the preprocess step again"
        )
    if arr.dtype != np.uint8 or arr.ndim != want:
        raise DataFormatError(
            f"{path}: array {key!r} is {arr.dtype} {arr.ndim}-D, want uint8 {want}-D"
        )


def load_npz(path: Path | str) -> dict[str, np.ndarray]:
    """The six arrays of a preprocessed npz, checked: uint8, images 4-D, labels 1-D, no pickle."""
    path, out = Path(path), {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in KEYS:
                if key not in npz.files:
                    raise DataFormatError(f"{path}: missing array {key!r}")
                try:
                    out[key] = npz[key]
                except ValueError as exc:  # object (pickled) arrays are refused
                    raise DataFormatError(f"{path}: array {key!r} unreadable ({exc})") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: not a readable npz ({exc})") from exc
    for key, arr in out.items():
        _check_array(path, key, arr)
    for s in SPLITS:
        x, y = out[f"x_{s}"], out[f"y_{s}"]
        if len(x) != len(y):
            raise DataFormatError(f"{path}: x_{s} has {len(x)} images but y_{s} {len(y)} labels")
        if x.shape[1:] != out["x_train"].shape[1:]:
            raise DataFormatError(f"{path}: x_{s} image shape differs from x_train")
    return out
