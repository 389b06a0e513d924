"""afternoon.preprocess: raw files -> checked npz + data card, atomically; load_npz."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from afternoon.errors import ConfigError, DataFormatError
from afternoon.npz import KEYS, load_npz
from afternoon.stages import preprocess
from afternoon.stages.preprocess import preprocess_dataset
from helpers.data import (
    make_cifar_archive,
    make_idx_dataset,
    random_images,
    real_mnist_files,
    write_idx,
    write_manifest,
)


@pytest.fixture
def mnist_like(tmp_path):
    """Tiny valid MNIST-shaped raw files + manifest: (manifest path, paths by role, arrays)."""
    paths, arrays = make_idx_dataset(tmp_path / "raw", n_train=100, n_test=20)
    manifest = write_manifest(tmp_path / "raw" / "manifest.json", "mnist", paths)
    return manifest, paths, arrays


def outputs(tmp_path):
    out = tmp_path / "out"
    return out / "mnist.npz", out / "mnist.card.json"


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_idx_round_trip_and_card(tmp_path, mnist_like):
    manifest, paths, arrays = mnist_like
    npz, card_path = outputs(tmp_path)
    card = preprocess_dataset("mnist", manifest, npz, card_path)
    assert listing(npz.parent) == ["mnist.card.json", "mnist.npz"]
    data = load_npz(npz)
    assert set(data) == set(KEYS)
    np.testing.assert_array_equal(data["x_train"][..., 0], arrays["x_train"])
    np.testing.assert_array_equal(data["y_train"], arrays["y_train"])
    np.testing.assert_array_equal(data["x_test"][..., 0], arrays["x_test"])
    np.testing.assert_array_equal(data["y_test"], arrays["y_test"])
    assert data["x_val"].shape == (0, 28, 28, 1) and data["x_val"].dtype == np.uint8
    assert data["y_val"].shape == (0,) and data["y_val"].dtype == np.uint8

    assert json.loads(card_path.read_text()) == card
    assert card["dataset"] == "mnist" and card["format"] == "idx"
    assert card["image_shape"] == [28, 28, 1]
    assert card["class_names"] == [str(i) for i in range(10)]
    published = {"check": "sha256", "verified_by": "size and sha256 of the file as published"}
    assert card["source_files"] == [  # a manifest without a check: the published sha256
        {"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), **published}
        for p in paths.values()
    ]
    assert card["splits"]["train"] == {"n": 100, "per_class": [10] * 10}
    assert card["splits"]["val"] == {"n": 0, "per_class": [0] * 10}
    assert card["splits"]["test"] == {"n": 20, "per_class": [2] * 10}
    x = arrays["x_train"] / 255.0
    assert card["pixel_mean"] == pytest.approx([x.mean()], rel=1e-12)
    assert card["pixel_std"] == pytest.approx([x.std()], rel=1e-9)
    assert card["normalization"].startswith("x / 255 by the model")
    assert card["validation_fraction"] == 0.0 and card["seed"] == 0
    assert card["npz_sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()
    umask = os.umask(0)
    os.umask(umask)
    assert npz.stat().st_mode & 0o777 == 0o666 & ~umask


def test_validation_split_stratified_and_seeded(tmp_path, mnist_like):
    manifest, _, arrays = mnist_like
    runs = {}
    for seed in (0, 0, 1):
        npz, card_path = tmp_path / f"s{seed}.npz", tmp_path / f"s{seed}.json"
        card = preprocess_dataset("mnist", manifest, npz, card_path, 0.2, seed)
        runs.setdefault(seed, []).append((load_npz(npz), card))
    (a, card), (b, _), (c, _) = runs[0][0], runs[0][1], runs[1][0]
    assert card["splits"]["train"] == {"n": 80, "per_class": [8] * 10}
    assert card["splits"]["val"] == {"n": 20, "per_class": [2] * 10}
    assert card["validation_fraction"] == 0.2
    for key in KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["x_val"], c["x_val"])
    # train + val is a partition of the original training set, train keeps its original order
    original = arrays["x_train"].reshape(100, -1)
    idx = {row.tobytes(): i for i, row in enumerate(original)}
    kept = [idx[r.tobytes()] for r in a["x_train"].reshape(80, -1)]
    val = [idx[r.tobytes()] for r in a["x_val"].reshape(20, -1)]
    assert kept == sorted(kept) and sorted(kept + val) == list(range(100))
    np.testing.assert_array_equal(a["y_val"], arrays["y_train"][val])
    x = a["x_train"] / 255.0
    assert card["pixel_mean"] == pytest.approx([x.mean()], rel=1e-12)
    assert card["pixel_std"] == pytest.approx([x.std()], rel=1e-9)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, True, "0.1", None])
def test_bad_validation_fraction(tmp_path, mnist_like, fraction):
    npz, card_path = outputs(tmp_path)
    with pytest.raises(ConfigError, match="validation_fraction"):
        preprocess_dataset("mnist", mnist_like[0], npz, card_path, fraction)
    assert listing(npz.parent) == []


def test_unknown_dataset(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        preprocess_dataset("nope", None, *outputs(tmp_path))


def test_cifar10(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    expected = make_cifar_archive(archive, per_batch=4, n_test=3)
    manifest = write_manifest(tmp_path / "m.json", "cifar10", {"archive": archive})
    npz, card_path = tmp_path / "c.npz", tmp_path / "c.json"
    card = preprocess_dataset("cifar10", manifest, npz, card_path)
    data = load_npz(npz)
    np.testing.assert_array_equal(data["x_train"], expected["x_train"])
    np.testing.assert_array_equal(data["y_test"], expected["y_test"])
    assert data["x_val"].shape == (0, 32, 32, 3)
    assert card["splits"]["train"]["n"] == 20 and card["splits"]["test"]["n"] == 3
    assert sum(card["splits"]["train"]["per_class"]) == 20
    assert (
        card["splits"]["train"]["per_class"]
        == np.bincount(expected["y_train"], minlength=10).tolist()
    )
    x = expected["x_train"] / 255.0
    assert card["pixel_mean"] == pytest.approx(x.mean(axis=(0, 1, 2)).tolist(), rel=1e-12)
    assert card["pixel_std"] == pytest.approx(x.std(axis=(0, 1, 2)).tolist(), rel=1e-9)
    assert card["source_files"][0]["name"] == "cifar-10-binary.tar.gz"


@pytest.mark.parametrize("empty_manifest", [False, True])
def test_digits(tmp_path, empty_manifest):
    manifest = None
    if empty_manifest:
        manifest = write_manifest(tmp_path / "m.json", "digits", {})
    npz, card_path = tmp_path / "d.npz", tmp_path / "d.json"
    card = preprocess_dataset("digits", manifest, npz, card_path, 0.1, seed=3)
    n = {s: card["splits"][s]["n"] for s in ("train", "val", "test")}
    assert n == {"train": 1212, "val": 135, "test": 450}
    for split in ("train", "val", "test"):
        assert sum(card["splits"][split]["per_class"]) == n[split]
    data = load_npz(npz)
    assert data["x_train"].shape == (1212, 8, 8, 1)
    assert card["source_files"] == []
    # the test split is fixed (registry seed 0), whatever the validation seed
    other = preprocess_dataset("digits", None, tmp_path / "e.npz", tmp_path / "e.json", 0.1, 4)
    assert other["splits"]["test"] == card["splits"]["test"]
    np.testing.assert_array_equal(load_npz(tmp_path / "e.npz")["x_test"], data["x_test"])
    assert other["splits"]["val"]["n"] == 135


def test_label_out_of_range_names_file(tmp_path, mnist_like):
    manifest, paths, _ = mnist_like
    write_idx(paths["test_labels"], np.array([10] + [0] * 19, np.uint8))
    manifest = write_manifest(manifest, "mnist", paths)
    npz, card_path = outputs(tmp_path)
    with pytest.raises(DataFormatError, match=r"t10k-labels-idx1-ubyte\.gz: labels 0\.\.10"):
        preprocess_dataset("mnist", manifest, npz, card_path)
    assert listing(npz.parent) == []


def test_wrong_image_shape_names_file(tmp_path):
    paths, _ = make_idx_dataset(tmp_path / "raw", n_train=10, n_test=10, shape=(27, 28))
    manifest = write_manifest(tmp_path / "m.json", "mnist", paths)
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte\.gz: images have shape"):
        preprocess_dataset("mnist", manifest, *outputs(tmp_path))


def test_count_mismatch_names_files(tmp_path, mnist_like):
    manifest, paths, _ = mnist_like
    write_idx(paths["train_images"], random_images(99))
    with pytest.raises(DataFormatError, match="has 99 images but .*train-labels.* has 100 labels"):
        preprocess_dataset("mnist", write_manifest(manifest, "mnist", paths), *outputs(tmp_path))


def test_manifest_problems(tmp_path, mnist_like):
    manifest, paths, _ = mnist_like
    with pytest.raises(ConfigError, match="for dataset 'mnist', not 'fashion_mnist'"):
        preprocess_dataset("fashion_mnist", manifest, *outputs(tmp_path))
    partial = write_manifest(tmp_path / "p.json", "mnist", {"train_images": paths["train_images"]})
    with pytest.raises(DataFormatError, match=r"p\.json: no file with role\(s\) train_labels"):
        preprocess_dataset("mnist", partial, *outputs(tmp_path))
    paths["test_images"].unlink()
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte.gz does not exist"):
        preprocess_dataset("mnist", manifest, *outputs(tmp_path))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=r"bad\.json: unreadable manifest"):
        preprocess_dataset("mnist", tmp_path / "bad.json", *outputs(tmp_path))


def test_manifest_relative_paths(tmp_path, mnist_like):
    manifest, _, _ = mnist_like
    doc = json.loads(manifest.read_text())
    for f in doc["files"]:
        f["path"] = Path(f["path"]).name  # relative to the manifest's directory
    manifest.write_text(json.dumps(doc))
    card = preprocess_dataset("mnist", manifest, *outputs(tmp_path))
    assert card["splits"]["train"]["n"] == 100


def test_card_write_failure_leaves_nothing(tmp_path, mnist_like, monkeypatch):
    npz, card_path = outputs(tmp_path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(preprocess.json, "dump", boom)
    with pytest.raises(OSError, match="disk full"):
        preprocess_dataset("mnist", mnist_like[0], npz, card_path)
    assert listing(npz.parent) == []


def test_failure_keeps_earlier_outputs(tmp_path, mnist_like, monkeypatch):
    npz, card_path = outputs(tmp_path)
    preprocess_dataset("mnist", mnist_like[0], npz, card_path)
    before = npz.read_bytes(), card_path.read_bytes()
    monkeypatch.setattr(preprocess.json, "dump", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        preprocess_dataset("mnist", mnist_like[0], npz, card_path, 0.5)
    assert listing(npz.parent) == ["mnist.card.json", "mnist.npz"]
    assert (npz.read_bytes(), card_path.read_bytes()) == before


def test_card_replace_failure_removes_new_npz(tmp_path, mnist_like, monkeypatch):
    npz, card_path = outputs(tmp_path)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if Path(dst) == card_path:
            raise OSError("replace failed")
        real_replace(src, dst)

    monkeypatch.setattr(preprocess.os, "replace", replace)
    with pytest.raises(OSError, match="replace failed"):
        preprocess_dataset("mnist", mnist_like[0], npz, card_path)
    assert calls == [npz, card_path]
    assert listing(npz.parent) == []


# --- load_npz ----------------------------------------------------------------------------


def valid_arrays() -> dict[str, np.ndarray]:
    x, y = np.zeros((3, 4, 4, 1), np.uint8), np.array([0, 1, 2], np.uint8)
    return {"x_train": x, "y_train": y, "x_val": x[:0], "y_val": y[:0], "x_test": x, "y_test": y}


def test_load_npz_round_trip(tmp_path):
    np.savez(tmp_path / "ok.npz", **valid_arrays())
    out = load_npz(tmp_path / "ok.npz")
    for key, value in valid_arrays().items():
        np.testing.assert_array_equal(out[key], value)
        assert out[key].shape == value.shape


def test_load_npz_missing_key(tmp_path):
    arrays = valid_arrays()
    del arrays["y_val"]
    np.savez(tmp_path / "m.npz", **arrays)
    with pytest.raises(DataFormatError, match=r"m\.npz: missing array 'y_val'"):
        load_npz(tmp_path / "m.npz")


def test_load_npz_rejects_pickled_object_array(tmp_path):
    arrays = valid_arrays()
    arrays["y_test"] = np.array([{"a": 1}, None, 3], dtype=object)
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(DataFormatError, match=r"p\.npz: array 'y_test' unreadable"):
        load_npz(tmp_path / "p.npz")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("x_train", np.zeros((3, 4, 4, 1), np.float32), "'x_train' is float32 4-D, want uint8 4-D"),
        ("y_test", np.array([0, 1, 2], np.int64), "'y_test' is int64 1-D, want uint8 1-D"),
        ("x_test", np.zeros((3, 4, 4), np.uint8), "'x_test' is uint8 3-D, want uint8 4-D"),
        ("y_train", np.array([0, 1], np.uint8), "x_train has 3 images but y_train 2 labels"),
        ("x_test", np.zeros((3, 5, 4, 1), np.uint8), "x_test image shape differs"),
    ],
)
def test_load_npz_rejects_bad_arrays(tmp_path, key, value, message):
    arrays = valid_arrays() | {key: value}
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(DataFormatError, match=r"b\.npz: .*" + message):
        load_npz(tmp_path / "b.npz")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"plain text"])
def test_load_npz_not_an_npz(tmp_path, content):
    (tmp_path / "n.npz").write_bytes(content)
    with pytest.raises(DataFormatError, match=r"n\.npz: "):
        load_npz(tmp_path / "n.npz")


# --- real MNIST --------------------------------------------------------------------------


def test_real_mnist_preprocess(tmp_path):
    paths = real_mnist_files()
    manifest = write_manifest(tmp_path / "manifest.json", "mnist", paths)
    npz, card_path = outputs(tmp_path)
    card = preprocess_dataset("mnist", manifest, npz, card_path, validation_fraction=0.1)
    assert {s: card["splits"][s]["n"] for s in ("train", "val", "test")} == {
        "train": 54000,
        "val": 6000,
        "test": 10000,
    }
    data = load_npz(npz)
    assert data["x_train"].shape == (54000, 28, 28, 1)
    assert data["x_val"].shape == (6000, 28, 28, 1)
    assert data["x_test"].shape == (10000, 28, 28, 1)
    train_val = np.add(card["splits"]["train"]["per_class"], card["splits"]["val"]["per_class"])
    assert train_val.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert card["pixel_mean"][0] == pytest.approx(0.1307, abs=5e-4)  # the well-known value
    assert card["pixel_std"][0] == pytest.approx(0.3081, abs=5e-4)
    expected = {f["name"]: f["sha256"] for f in json.loads(manifest.read_text())["files"]}
    assert {f["name"]: f["sha256"] for f in card["source_files"]} == expected
