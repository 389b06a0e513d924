"""Stage preprocess: raw dataset files -> one checked uint8 npz (train/val/test) plus a JSON
data card.

Written atomically: if anything fails, no new output is left and earlier outputs stay."""

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from afternoon import formats
from afternoon.errors import ConfigError, DataFormatError
from afternoon.fileio import naming_write_errors
from afternoon.npz import KEYS, SPLITS, write_npz
from afternoon.registry import CHECKS, dataset_entry

RAW_KEYS = ("x_train", "y_train", "x_test", "y_test")  # in the order of formats.IDX_ROLES
NORMALIZATION = "x / 255 by the model's first layer (Rescaling); stored as uint8"


def _read_manifest(name: str, manifest_path: Path | None) -> list[dict]:
    """The manifest's files, "path" a Path (relative: to the manifest's dir if there, else cwd)."""
    if manifest_path is None:
        return []
    manifest_path = Path(manifest_path)
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest["dataset"] != name:
            raise ConfigError(f"{manifest_path}: for dataset {manifest['dataset']!r}, not {name!r}")
        files = [dict(f) for f in manifest["files"]]
        for f in files:
            path = Path(f["path"])
            if not path.is_absolute() and (manifest_path.parent / path).exists():
                path = manifest_path.parent / path
            if not path.is_file():
                raise DataFormatError(f"{manifest_path}: listed file {path} does not exist")
            f["path"], f["name"] = path, f.get("name", path.name)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{manifest_path}: unreadable manifest ({exc!r})") from exc
    return files


def _source_file(record: dict) -> dict:
    """A manifest record as the card lists it: name, sha256 and the check it passed."""
    check = record.get("check", "sha256")
    card = {"name": record["name"], "sha256": record.get("sha256"), "check": check}
    card["verified_by"] = CHECKS[check]
    if "uncompressed_sha256" in record:
        card["uncompressed_sha256"] = record["uncompressed_sha256"]
    return card


def _load_raw(name: str, entry: dict, files: list[dict], manifest_path) -> tuple[dict, dict]:
    """The parsed arrays and, per array key, the file to name in error messages."""
    fmt = entry["format"]
    by_role = {f.get("role"): f["path"] for f in files}
    if fmt == "sklearn_digits":  # fixed test split: registry fraction, seed 0
        arrays = formats.load_digits_arrays(entry.get("test_fraction", 0.25), seed=0)
        return arrays, dict.fromkeys(arrays, "sklearn.datasets.load_digits")
    roles = formats.IDX_ROLES if fmt == "idx" else ("archive",)
    if missing := [r for r in roles if r not in by_role]:
        raise DataFormatError(f"{manifest_path}: no file with role(s) {', '.join(missing)}")
    if fmt == "idx":
        sources = dict(zip(RAW_KEYS, map(by_role.get, formats.IDX_ROLES), strict=True))
        return formats.read_idx_dataset(by_role), sources
    if fmt == "cifar10_binary":
        archive = by_role["archive"]
        return formats.read_cifar10_binary(archive), dict.fromkeys(RAW_KEYS, archive)
    raise ConfigError(f"dataset {name!r}: unknown format {fmt!r}")


def _check(arrays: dict, sources: dict, image_shape: tuple, n_classes: int) -> dict:
    """Shapes vs the registry, no NaN (float input), labels within the class list; -> uint8."""
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], np.asarray(arrays[f"y_{split}"])
        xs, ys = sources[f"x_{split}"], sources[f"y_{split}"]
        if tuple(x.shape[1:]) != image_shape:
            raise DataFormatError(f"{xs}: images have shape {x.shape[1:]}, expected {image_shape}")
        if x.dtype.kind == "f" and not np.all((x >= 0) & (x <= 255)):  # NaN fails both
            raise DataFormatError(f"{xs}: images contain NaN or values outside 0..255")
        if y.ndim != 1 or len(y) != len(x):
            raise DataFormatError(f"{ys}: {y.shape} labels for {len(x)} images")
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise DataFormatError(f"{ys}: labels {y.min()}..{y.max()} outside 0..{n_classes - 1}")
        out[f"x_{split}"] = (np.rint(x) if x.dtype.kind == "f" else x).astype(np.uint8)
        out[f"y_{split}"] = y.astype(np.uint8)
    return out


def _split_validation(arrays: dict, fraction: float, seed: int) -> dict:
    """A seeded, stratified validation set off the training set (empty when fraction is 0)."""
    x, y = arrays["x_train"], arrays["y_train"]
    if fraction == 0:
        return arrays | {"x_val": x[:0].copy(), "y_val": y[:0].copy()}
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    try:
        keep, val = train_test_split(index, test_size=fraction, random_state=seed, stratify=y)
    except ValueError as exc:
        raise ConfigError(f"validation_fraction {fraction}: no stratified split: {exc}") from exc
    keep, val = np.sort(keep), np.sort(val)  # keep the original order within each part
    return arrays | {"x_train": x[keep], "y_train": y[keep], "x_val": x[val], "y_val": y[val]}


def _pixel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (population) of uint8 images on the [0, 1] scale, exact sums."""
    channels = x.shape[-1]
    total, squares = np.zeros(channels, np.int64), np.zeros(channels, np.int64)
    for start in range(0, len(x), 1024):
        block = x[start : start + 1024].reshape(-1, channels).astype(np.int64)
        total += block.sum(axis=0)
        squares += (block * block).sum(axis=0)
    n = max(x.size // channels, 1)
    mean = total / n
    var = np.maximum(squares / n - mean * mean, 0.0)
    return (mean / 255).tolist(), (np.sqrt(var) / 255).tolist()


def preprocess_dataset(
    name: str,
    manifest_path: Path | None,
    out_npz: Path,
    out_card: Path,
    validation_fraction: float = 0.0,
    seed: int = 0,
) -> dict:
    """Parse, check, split and write the dataset npz and its card; returns the card."""
    entry = dataset_entry(name)
    fraction = validation_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {fraction!r}")
    out_npz, out_card = Path(out_npz), Path(out_card)
    files = _read_manifest(name, manifest_path)
    image_shape, class_names = tuple(entry["image_shape"]), list(entry["class_names"])
    raw, sources = _load_raw(name, entry, files, manifest_path)
    arrays = _check(raw, sources, image_shape, len(class_names))
    arrays = _split_validation(arrays, float(fraction), seed)
    mean, std = _pixel_stats(arrays["x_train"])
    per_class = {s: np.bincount(arrays[f"y_{s}"], minlength=len(class_names)) for s in SPLITS}
    card = {
        "dataset": name,
        "format": entry["format"],
        "source_files": [_source_file(f) for f in files],
        "image_shape": list(image_shape),
        "class_names": class_names,
        "splits": {s: {"n": int(c.sum()), "per_class": c.tolist()} for s, c in per_class.items()},
        "pixel_mean": mean,
        "pixel_std": std,
        "normalization": NORMALIZATION,
        "validation_fraction": float(fraction),
        "seed": seed,
        "npz": out_npz.name,
    }
    out_npz.parent.mkdir(parents=True, exist_ok=True)
    out_card.parent.mkdir(parents=True, exist_ok=True)
    # temp files beside the outputs (same filesystem, so os.replace is atomic)
    tmp_npz, tmp_card = (p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in (out_npz, out_card))
    try:
        with naming_write_errors(out_npz, tmp_npz):
            write_npz(tmp_npz, {k: arrays[k] for k in KEYS})
        with open(tmp_npz, "rb") as fh:
            card["npz_sha256"] = hashlib.file_digest(fh, "sha256").hexdigest()
        with naming_write_errors(out_card, tmp_card), open(tmp_card, "w") as fh:
            json.dump(card, fh, indent=2)
        os.replace(tmp_npz, out_npz)
        try:
            os.replace(tmp_card, out_card)
        except BaseException:
            out_npz.unlink(missing_ok=True)  # never leave a new npz beside an old card
            raise
    finally:  # lexists first: unlink raises EROFS on a read-only file system, even for no file
        for tmp in (tmp_npz, tmp_card):
            if os.path.lexists(tmp):
                tmp.unlink()
    return card


def main(args: argparse.Namespace) -> None:
    preprocess_dataset(
        args.dataset,
        Path(args.manifest) if args.manifest else None,
        Path(args.npz),
        Path(args.card),
        validation_fraction=args.validation_fraction,
        seed=args.seed,
    )
