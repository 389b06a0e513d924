"""afternoon.formats: IDX, CIFAR-10 binary and sklearn digits parsers."""

import numpy as np
import pytest

from afternoon.errors import ConfigError, DataFormatError
from afternoon.formats import (
    load_digits_arrays,
    read_cifar10_binary,
    read_idx,
    read_idx_dataset,
)
from helpers.data import (
    CIFAR_TEST_MEMBER,
    CIFAR_TRAIN_MEMBERS,
    cifar_member_bytes,
    idx_bytes,
    make_cifar_archive,
    make_idx_dataset,
    real_mnist_files,
    write_bytes,
    write_idx,
    write_truncated_gzip,
    write_truncated_idx,
)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- IDX ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_read_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / name, array))
    assert out.dtype == np.uint8
    assert out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)
    assert out.flags.writeable


def test_read_idx_1d_labels(tmp_path):
    labels = np.array([7, 2, 1, 0, 4], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.gz", labels)), labels)


def test_read_idx_wrong_magic(tmp_path):
    path = write_idx(tmp_path / "bad.gz", np.zeros((2, 2), np.uint8), magic=b"\x01\x02\x08\x02")
    with pytest.raises(DataFormatError, match=r"bad\.gz: not an IDX file \(magic 0x01020802\)"):
        read_idx(path)


def test_read_idx_empty_file(tmp_path):
    path = write_bytes(tmp_path / "empty", b"")
    with pytest.raises(DataFormatError, match="empty: not an IDX file"):
        read_idx(path)


def test_read_idx_rejects_non_uint8(tmp_path):
    path = write_idx(tmp_path / "f.idx", np.zeros((2, 2), np.float32), dtype_code=0x0D)
    with pytest.raises(DataFormatError, match=r"f\.idx: IDX dtype code 0x0d \(float32\)"):
        read_idx(path)


@pytest.mark.parametrize("name", ["t-idx3-ubyte", "t-idx3-ubyte.gz"])
def test_read_idx_truncated_data(tmp_path, name):
    path = tmp_path / name
    write_bytes(path, idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5])
    with pytest.raises(DataFormatError, match="truncated data") as err:
        read_idx(path)
    assert name in str(err.value)
    assert "truncated data" in str(err.value)
    assert "need 48 bytes, file has 43" in str(err.value)


def test_read_idx_truncated_header(tmp_path):
    path = write_bytes(tmp_path / "h", bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataFormatError, match="h: truncated IDX header"):
        read_idx(path)


def test_read_idx_trailing_bytes(tmp_path):
    path = write_bytes(tmp_path / "x", idx_bytes(np.zeros((2, 2), np.uint8)) + b"\0")
    with pytest.raises(DataFormatError, match="x: trailing bytes.*need 4 bytes, file has 5"):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    path = write_truncated_gzip(tmp_path / "cut.gz", np.arange(1000, dtype=np.uint32) % 256)
    with pytest.raises(DataFormatError, match=r"cut\.gz: truncated or corrupt gzip"):
        read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    path = write_bytes(tmp_path / "junk.gz", b"\x1f\x8b" + b"\xff" * 40, gz=False)
    with pytest.raises(DataFormatError, match=r"junk\.gz: truncated or corrupt gzip"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataFormatError, match="nope.gz: cannot read"):
        read_idx(tmp_path / "nope.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_dataset_round_trip(tmp_path, gz):
    paths, arrays = make_idx_dataset(tmp_path, n_train=12, n_test=5, shape=(6, 7), gz=gz)
    out = read_idx_dataset(paths)
    assert set(out) == {"x_train", "y_train", "x_test", "y_test"}
    assert out["x_train"].shape == (12, 6, 7, 1)
    assert out["x_test"].shape == (5, 6, 7, 1)
    for key in ("x_train", "x_test"):
        np.testing.assert_array_equal(out[key][..., 0], arrays[key])
    for key in ("y_train", "y_test"):
        assert out[key].dtype == np.uint8
        np.testing.assert_array_equal(out[key], arrays[key])


def test_read_idx_dataset_count_mismatch(tmp_path):
    paths, _ = make_idx_dataset(tmp_path, n_train=12, n_test=5, shape=(6, 7))
    write_idx(paths["test_labels"], np.zeros(4, np.uint8))
    with pytest.raises(DataFormatError, match="has 5 images .*has 4 labels") as err:
        read_idx_dataset(paths)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz has 5 images" in msg
    assert "t10k-labels-idx1-ubyte.gz has 4 labels" in msg


def test_read_idx_dataset_truncated_member_names_file(tmp_path):
    paths, arrays = make_idx_dataset(tmp_path, n_train=12, n_test=5, shape=(6, 7))
    write_truncated_idx(paths["train_images"], arrays["x_train"])
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.gz: truncated data"):
        read_idx_dataset(paths)


def test_read_idx_dataset_wrong_rank(tmp_path):
    paths, _ = make_idx_dataset(tmp_path, n_train=4, n_test=2, shape=(3, 3))
    write_idx(paths["train_labels"], np.zeros((4, 1), np.uint8))
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte.gz: labels must be 1-D"):
        read_idx_dataset(paths)


def test_read_idx_dataset_missing_role(tmp_path):
    paths, _ = make_idx_dataset(tmp_path, n_train=4, n_test=2, shape=(3, 3))
    del paths["test_labels"]
    with pytest.raises(ConfigError, match="test_labels"):
        read_idx_dataset(paths)


# --- CIFAR-10 binary ---------------------------------------------------------------------


def test_cifar_member_layout_is_channel_major():
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 0, 1, 0], image[0, 0, 0, 1], image[0, 1, 0, 2] = 11, 22, 33
    data = cifar_member_bytes(image, np.array([4]))
    assert len(data) == 3073
    assert data[0] == 4
    assert data[1 + 1] == 11  # R plane, row 0, col 1
    assert data[1 + 1024] == 22  # G plane, row 0, col 0
    assert data[1 + 2048 + 32] == 33  # B plane, row 1, col 0


def test_read_cifar10_round_trip(tmp_path):
    expected = make_cifar_archive(tmp_path / "c.tar.gz", per_batch=3, n_test=4)
    out = read_cifar10_binary(tmp_path / "c.tar.gz")
    assert out["x_train"].shape == (15, 32, 32, 3)
    assert out["x_test"].shape == (4, 32, 32, 3)
    for key, value in expected.items():
        assert out[key].dtype == np.uint8
        np.testing.assert_array_equal(out[key], value)


def test_read_cifar10_wrong_record_length(tmp_path):
    name = CIFAR_TRAIN_MEMBERS[2]
    make_cifar_archive(tmp_path / "c.tar.gz", overrides={name: b"\0" * 3074})
    with pytest.raises(DataFormatError, match="has 3074 bytes") as err:
        read_cifar10_binary(tmp_path / "c.tar.gz")
    assert "c.tar.gz" in str(err.value)
    assert f"{name} has 3074 bytes" in str(err.value)


def test_read_cifar10_empty_member(tmp_path):
    make_cifar_archive(tmp_path / "c.tar.gz", overrides={CIFAR_TEST_MEMBER: b""})
    with pytest.raises(DataFormatError, match="test_batch.bin has 0 bytes"):
        read_cifar10_binary(tmp_path / "c.tar.gz")


def test_read_cifar10_missing_member(tmp_path):
    make_cifar_archive(tmp_path / "c.tar.gz", overrides={CIFAR_TRAIN_MEMBERS[4]: None})
    with pytest.raises(DataFormatError, match=r"missing member\(s\) .*data_batch_5.bin") as err:
        read_cifar10_binary(tmp_path / "c.tar.gz")
    assert "c.tar.gz: missing member(s) cifar-10-batches-bin/data_batch_5.bin" in str(err.value)


def test_read_cifar10_label_out_of_range(tmp_path):
    bad = bytearray(cifar_member_bytes(np.zeros((2, 32, 32, 3), np.uint8), np.array([1, 2])))
    bad[3073] = 10  # label of record 1
    make_cifar_archive(tmp_path / "c.tar.gz", overrides={CIFAR_TEST_MEMBER: bytes(bad)})
    with pytest.raises(DataFormatError, match="record 1 has label 10") as err:
        read_cifar10_binary(tmp_path / "c.tar.gz")
    assert "c.tar.gz: member cifar-10-batches-bin/test_batch.bin record 1 has label 10" in str(
        err.value
    )


def test_read_cifar10_truncated_archive(tmp_path):
    path = tmp_path / "c.tar.gz"
    make_cifar_archive(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataFormatError, match=r"c\.tar\.gz: "):
        read_cifar10_binary(path)


def test_read_cifar10_not_an_archive(tmp_path):
    path = write_bytes(tmp_path / "c.tar.gz", b"not a tar at all", gz=False)
    with pytest.raises(DataFormatError, match=r"c\.tar\.gz: truncated or corrupt tar\.gz"):
        read_cifar10_binary(path)


# --- sklearn digits ----------------------------------------------------------------------


def test_digits_split_sizes_and_scaling():
    out = load_digits_arrays(0.25, seed=0)
    assert out["x_train"].shape == (1347, 8, 8, 1)
    assert out["x_test"].shape == (450, 8, 8, 1)
    assert {v.dtype for v in out.values()} == {np.dtype(np.uint8)}
    full = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    train = [133, 136, 133, 137, 136, 136, 136, 134, 131, 135]
    test = [45, 46, 44, 46, 45, 46, 45, 45, 43, 45]
    assert np.bincount(out["y_train"]).tolist() == train
    assert np.bincount(out["y_test"]).tolist() == test
    assert [a + b for a, b in zip(train, test, strict=True)] == full
    pixels = np.unique(np.concatenate([out["x_train"].ravel(), out["x_test"].ravel()]))
    assert pixels.tolist() == [round(v * 255 / 16) for v in range(17)]


def test_digits_deterministic_per_seed():
    a, b, c = load_digits_arrays(0.25, 0), load_digits_arrays(0.25, 0), load_digits_arrays(0.25, 1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["x_test"], c["x_test"])
    assert np.bincount(c["y_test"]).sum() == 450


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, True])
def test_digits_bad_fraction(fraction):
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits_arrays(fraction)


# --- real MNIST --------------------------------------------------------------------------


def test_real_mnist():
    out = read_idx_dataset(real_mnist_files())
    assert out["x_train"].shape == (60000, 28, 28, 1)
    assert out["x_test"].shape == (10000, 28, 28, 1)
    assert np.bincount(out["y_train"]).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(out["y_test"]).tolist() == MNIST_TEST_COUNTS
