"""Tests of afternoon.download against a loopback HTTP server and local mirrors."""

import gzip
import hashlib
import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest

from afternoon.errors import DownloadError
from afternoon.fileio import sha256_file as sha256_of
from afternoon.stages import download
from afternoon.stages.download import download_dataset, fetch_file
from helpers.components import need_debian_fashion_mnist, need_mnist, require
from helpers.httpserver import LoopbackServer
from helpers.paths import SHARED_DATA
from helpers.services import free_port

# The published checksums (tensorflow/datasets url_checksums), in sha256sum format.
MNIST_SHA256SUMS = """
440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609  train-images-idx3-ubyte.gz
3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c  train-labels-idx1-ubyte.gz
8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6  t10k-images-idx3-ubyte.gz
f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6  t10k-labels-idx1-ubyte.gz
"""
MNIST_SHA256 = {name: sha for sha, name in map(str.split, MNIST_SHA256SUMS.strip().splitlines())}
FAST = {"retries": 2, "backoff": 0.01, "timeout": 5.0, "progress": False}


def make_file(root: Path, rel: str, nbytes: int = 4096, seed: int = 0) -> tuple[Path, bytes]:
    """Write gzip'd pseudo-random bytes to ``root/rel``; returns (path, bytes written)."""
    raw = hashlib.shake_256(f"seed{seed}".encode()).digest(nbytes)
    data = gzip.compress(raw, mtime=0)
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, data


def entry_for(data: bytes, name: str, url: str, role: str = "train_images") -> dict:
    """A registry file entry whose size and sha256 describe ``data``."""
    sha = hashlib.sha256(data).hexdigest()
    return {"name": name, "role": role, "url": url, "size": len(data), "sha256": sha}


@pytest.fixture
def www(tmp_path):
    """A served directory holding ``toy/a.gz`` and ``toy/b.gz``; yields (server, entries)."""
    root = tmp_path / "www"
    _, a = make_file(root, "toy/a.gz", seed=1)
    _, b = make_file(root, "toy/b.gz", seed=2, nbytes=2048)
    with LoopbackServer(root) as server:
        entries = [
            entry_for(a, "a.gz", server.url("toy/a.gz"), role="train_images"),
            entry_for(b, "b.gz", server.url("toy/b.gz"), role="train_labels"),
        ]
        yield server, entries


@pytest.fixture
def dest_dir(tmp_path):
    path = tmp_path / "data"
    path.mkdir()
    return path


def test_sha256_of_streams_whole_file(tmp_path):
    path = tmp_path / "big.bin"
    data = os.urandom((1 << 20) * 2 + 17)  # crosses the 1 MiB block boundary
    path.write_bytes(data)
    assert sha256_of(path) == hashlib.sha256(data).hexdigest()


def test_fetch_success(www, dest_dir):
    server, (a, _) = www
    got = fetch_file(a, dest_dir / "a.gz", **FAST)
    assert got == dest_dir / "a.gz"
    assert sha256_of(got) == a["sha256"]
    assert os.listdir(dest_dir) == ["a.gz"]
    assert server.count("/toy/a.gz") == 1


def test_cache_hit_makes_no_request(www, dest_dir, caplog):
    server, (a, _) = www
    fetch_file(a, dest_dir / "a.gz", **FAST)
    server.stop()
    caplog.set_level("INFO", logger="afternoon.stages.download")
    fetch_file(a, dest_dir / "a.gz", **FAST)
    assert server.count("/toy/a.gz") == 1
    assert any("cached" in r.getMessage() for r in caplog.records)


def test_checksum_mismatch_names_url_and_both_hashes(www, dest_dir):
    server, (a, _) = www
    actual = a["sha256"]
    bad = {**a, "sha256": "0" * 64}
    with pytest.raises(DownloadError, match="0" * 64) as err:
        fetch_file(bad, dest_dir / "a.gz", **FAST)
    msg = str(err.value)
    assert a["url"] in msg and "0" * 64 in msg and actual in msg
    assert "\n" not in msg
    assert os.listdir(dest_dir) == []
    assert server.count("/toy/a.gz") == 1  # verification failures are not retried


def test_truncated_file(www, dest_dir):
    server, (a, _) = www
    server.truncate("/toy/a.gz", 100)
    with pytest.raises(DownloadError, match="truncated") as err:
        fetch_file(a, dest_dir / "a.gz", **FAST)
    assert f"expected {a['size']} bytes, got 100 bytes" in str(err.value)
    assert a["url"] in str(err.value)
    assert os.listdir(dest_dir) == []


def test_html_page_instead_of_data(www, dest_dir):
    server, (a, _) = www
    server.html("/toy/a.gz")
    with pytest.raises(DownloadError, match=r"returned an HTML page, not a\.gz") as err:
        fetch_file(a, dest_dir / "a.gz", **FAST)
    assert a["url"] in str(err.value)
    assert os.listdir(dest_dir) == []


def test_html_detection_ignores_case_and_whitespace(tmp_path):
    page = tmp_path / "page"
    page.write_bytes(b"  \r\n\t<HTML><body>denied</body></HTML>")
    entry = {"name": "x.gz", "size": 10, "sha256": "0" * 64}
    with pytest.raises(DownloadError, match="returned an HTML page, not x.gz"):
        download.verify(page, entry, "http://example.invalid/x.gz")


def test_404_fails_fast(www, dest_dir):
    server, (a, _) = www
    server.fail("/toy/a.gz", 404)
    with pytest.raises(DownloadError, match="^HTTP 404 for ") as err:
        fetch_file(a, dest_dir / "a.gz", **FAST)
    assert str(err.value) == f"HTTP 404 for {a['url']}"
    assert server.count("/toy/a.gz") == 1
    assert os.listdir(dest_dir) == []


def test_500_twice_then_success(www, dest_dir, caplog):
    server, (a, _) = www
    server.fail("/toy/a.gz", 500, times=2)
    caplog.set_level("WARNING", logger="afternoon.stages.download")
    fetch_file(a, dest_dir / "a.gz", **FAST)
    assert server.count("/toy/a.gz") == 3
    assert sha256_of(dest_dir / "a.gz") == a["sha256"]
    assert sum("HTTP 500" in r.getMessage() for r in caplog.records) == 2


def test_500_forever_gives_up_after_all_attempts(www, dest_dir):
    server, (a, _) = www
    server.fail("/toy/a.gz", 503)
    with pytest.raises(DownloadError, match="after 3 attempts: HTTP 503$") as err:
        fetch_file(a, dest_dir / "a.gz", **FAST)
    assert str(err.value) == f"could not reach {a['url']} after 3 attempts: HTTP 503"
    assert server.count("/toy/a.gz") == 3
    assert os.listdir(dest_dir) == []


def test_server_down_clear_error_after_retries(dest_dir):
    url = f"http://127.0.0.1:{free_port()}/toy/a.gz"
    entry = {"name": "a.gz", "url": url, "size": 10, "sha256": "0" * 64}
    with pytest.raises(DownloadError, match="after 3 attempts: .*Connection refused") as err:
        fetch_file(entry, dest_dir / "a.gz", **FAST)
    msg = str(err.value)
    assert msg.startswith(f"could not reach {url} after 3 attempts: ")
    assert "Connection refused" in msg and "\n" not in msg
    assert os.listdir(dest_dir) == []


def test_silent_server_times_out_and_is_retried(dest_dir):
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/x.gz"
        entry = {"name": "x.gz", "url": url, "size": 10, "sha256": "0" * 64}
        with pytest.raises(DownloadError, match="after 2 attempts: timed out$") as err:
            fetch_file(entry, dest_dir / "x.gz", retries=1, backoff=0.01, timeout=0.2)
    assert str(err.value) == f"could not reach {url} after 2 attempts: timed out"
    assert os.listdir(dest_dir) == []


def test_backoff_is_exponential(monkeypatch, dest_dir):
    sleeps = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    url = f"http://127.0.0.1:{free_port()}/x.gz"
    entry = {"name": "x.gz", "url": url, "size": 10, "sha256": "0" * 64}
    with pytest.raises(DownloadError, match="after 4 attempts"):
        fetch_file(entry, dest_dir / "x.gz", retries=3, backoff=0.5, progress=False)
    assert sleeps == [0.5, 1.0, 2.0]


def test_corrupt_existing_dest_is_replaced(www, dest_dir):
    server, (a, _) = www
    (dest_dir / "a.gz").write_bytes(b"corrupt")
    fetch_file(a, dest_dir / "a.gz", **FAST)
    assert sha256_of(dest_dir / "a.gz") == a["sha256"]
    assert server.count("/toy/a.gz") == 1
    assert os.listdir(dest_dir) == ["a.gz"]


def test_corrupt_existing_dest_is_deleted_even_if_refetch_fails(www, dest_dir):
    server, (a, _) = www
    (dest_dir / "a.gz").write_bytes(b"corrupt")
    server.fail("/toy/a.gz", 404)
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_file(a, dest_dir / "a.gz", **FAST)
    assert os.listdir(dest_dir) == []


def test_good_dest_survives_unreachable_server(www, dest_dir):
    server, (a, _) = www
    fetch_file(a, dest_dir / "a.gz", **FAST)
    server.fail("/toy/a.gz", 404)
    server.stop()
    assert fetch_file(a, dest_dir / "a.gz", **FAST) == dest_dir / "a.gz"
    assert sha256_of(dest_dir / "a.gz") == a["sha256"]


def test_mirror_directory(tmp_path, dest_dir):
    _, data = make_file(tmp_path / "mirror", "toy/a.gz", seed=3)
    entry = entry_for(data, "a.gz", "http://127.0.0.1:9/unused/a.gz")
    manifest = download_dataset(
        "toy", dest_dir, tmp_path / "m.json", str(tmp_path / "mirror"), entries=[entry], **FAST
    )
    assert manifest["sources"] == [str(tmp_path / "mirror/toy/a.gz")]
    assert sha256_of(dest_dir / "a.gz") == entry["sha256"]


def test_mirror_file_url(tmp_path, dest_dir):
    _, data = make_file(tmp_path / "mirror", "toy/a.gz", seed=3)
    entry = entry_for(data, "a.gz", "http://127.0.0.1:9/unused/a.gz")
    mirror = (tmp_path / "mirror").as_uri()
    fetch_file(entry, dest_dir / "a.gz", mirror, dataset="toy", **FAST)
    assert sha256_of(dest_dir / "a.gz") == entry["sha256"]


def test_mirror_directory_missing(tmp_path, dest_dir):
    entry = {"name": "a.gz", "url": "http://127.0.0.1:9/a.gz", "size": 1, "sha256": "0" * 64}
    missing = tmp_path / "nope"
    with pytest.raises(DownloadError, match="^mirror directory .* does not exist$") as err:
        fetch_file(entry, dest_dir / "a.gz", str(missing), dataset="toy", **FAST)
    assert str(err.value) == f"mirror directory {missing} does not exist"
    assert os.listdir(dest_dir) == []


def test_mirror_file_missing_and_canonical_url_down_names_both(tmp_path, dest_dir):
    (tmp_path / "mirror").mkdir()
    entry = {"name": "a.gz", "url": "http://127.0.0.1:9/a.gz", "size": 1, "sha256": "0" * 64}
    with pytest.raises(DownloadError, match=re.escape(str(tmp_path / "mirror/toy/a.gz"))) as err:
        fetch_file(entry, dest_dir / "a.gz", str(tmp_path / "mirror"), dataset="toy", **FAST)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"mirror file {tmp_path / 'mirror/toy/a.gz'} does not exist; ")
    assert "its canonical URL: could not reach http://127.0.0.1:9/a.gz" in message
    assert os.listdir(dest_dir) == []


def test_a_dataset_the_mirror_lacks_comes_from_its_canonical_urls(www, tmp_path, dest_dir):
    """The README's mirror of Fashion-MNIST alone: the other datasets' files are fetched from
    their canonical URLs and checked against the published sha256."""
    server, entries = www  # the canonical URLs
    make_file(tmp_path / "mirror", "other/a.gz", seed=9)  # the mirror holds another dataset only
    manifest = download_dataset(
        "toy", dest_dir, tmp_path / "m.json", str(tmp_path / "mirror"), entries=entries, **FAST
    )
    assert manifest["sources"] == [e["url"] for e in entries]
    assert server.count("/toy/a.gz") == server.count("/toy/b.gz") == 1
    for record, entry in zip(manifest["files"], entries, strict=True):
        assert record["check"] == "sha256"
        assert sha256_of(record["path"]) == entry["sha256"]


def test_a_file_an_http_mirror_answers_404_comes_from_its_canonical_url(www, tmp_path, dest_dir):
    server, (a, _) = www
    (tmp_path / "empty").mkdir()
    with LoopbackServer(tmp_path / "empty") as mirror:  # 404 for every file
        fetch_file(a, dest_dir / "a.gz", mirror.base_url, dataset="toy", **FAST)
        assert mirror.count("/toy/a.gz") == 1
    assert server.count("/toy/a.gz") == 1
    assert sha256_of(dest_dir / "a.gz") == a["sha256"]


def test_the_canonical_url_fallback_takes_no_recompressed_copy(tmp_path, dest_dir):
    """Only a mirror's copy may be recompressed: what the canonical URL sends is the published
    file, or an error."""
    entry, copy = recompressed_pair(tmp_path, "toy/a.gz")
    (tmp_path / "www/toy").mkdir(parents=True)
    (tmp_path / "www/toy/a.gz").write_bytes(copy)
    (tmp_path / "mirror").mkdir()
    with LoopbackServer(tmp_path / "www") as server:
        entry["url"] = server.url("toy/a.gz")
        with pytest.raises(DownloadError, match="wrong size|sha256 mismatch"):
            fetch_file(entry, dest_dir / "a.gz", str(tmp_path / "mirror"), dataset="toy", **FAST)
    assert os.listdir(dest_dir) == []


def test_mirror_file_is_verified(tmp_path, dest_dir):
    _, data = make_file(tmp_path / "mirror", "toy/a.gz", seed=3)
    entry = entry_for(data + b"x", "a.gz", "http://127.0.0.1:9/a.gz")
    with pytest.raises(DownloadError, match="truncated") as err:
        fetch_file(entry, dest_dir / "a.gz", str(tmp_path / "mirror"), dataset="toy", **FAST)
    assert str(tmp_path / "mirror/toy/a.gz") in str(err.value)
    assert os.listdir(dest_dir) == []


def test_mirror_url(www, dest_dir):
    server, (a, _) = www
    entry = {**a, "url": "http://127.0.0.1:9/unreachable/a.gz"}
    fetch_file(entry, dest_dir / "a.gz", server.base_url + "/", dataset="toy", **FAST)
    assert server.count("/toy/a.gz") == 1
    assert sha256_of(dest_dir / "a.gz") == a["sha256"]


def test_manifest_written_atomically_and_correct(www, tmp_path, dest_dir):
    server, entries = www
    manifest_path = tmp_path / "out" / "manifest.json"
    returned = download_dataset("toy", dest_dir, manifest_path, entries=entries, **FAST)
    on_disk = json.loads(manifest_path.read_text())
    assert returned.pop("sources") == [e["url"] for e in entries]
    assert on_disk == returned
    assert on_disk["dataset"] == "toy"
    assert [f["name"] for f in on_disk["files"]] == ["a.gz", "b.gz"]
    for record, entry in zip(on_disk["files"], entries, strict=True):
        assert set(record) == {"name", "role", "url", "size", "sha256", "path", "check"}
        assert record["check"] == "sha256"
        assert record["url"] == entry["url"]
        assert record["role"] == entry["role"]
        assert (record["size"], record["sha256"]) == (entry["size"], entry["sha256"])
        assert sha256_of(record["path"]) == entry["sha256"]
    assert os.listdir(manifest_path.parent) == ["manifest.json"]  # no temp file left
    again = download_dataset("toy", dest_dir, manifest_path, entries=entries, **FAST)
    assert again["sources"] == ["cached", "cached"]
    assert json.loads(manifest_path.read_text()) == on_disk  # same files: same manifest bytes
    assert server.count("/toy/a.gz") == server.count("/toy/b.gz") == 1


def test_failed_dataset_leaves_old_manifest_alone(www, tmp_path, dest_dir):
    server, entries = www
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text("old")
    server.fail("/toy/b.gz", 404)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_dataset("toy", dest_dir, manifest_path, entries=entries, **FAST)
    assert manifest_path.read_text() == "old"
    assert os.listdir(dest_dir) == ["a.gz"]


def test_digits_manifest_is_empty(tmp_path):
    manifest_path = tmp_path / "digits.json"
    manifest = download_dataset("digits", tmp_path / "data", manifest_path, progress=False)
    assert manifest == {"dataset": "digits", "files": [], "sources": []}
    assert json.loads(manifest_path.read_text()) == {"dataset": "digits", "files": []}


def test_registry_mnist_matches_published_checksums():
    from afternoon.registry import dataset_entry

    files = dataset_entry("mnist")["files"]
    assert {f["name"]: f["sha256"] for f in files} == MNIST_SHA256


def test_real_mnist_through_loopback_mirror(tmp_path):
    with LoopbackServer(need_mnist().parent) as server:
        manifest = download_dataset(
            "mnist", tmp_path / "data", tmp_path / "mnist.json", server.base_url, **FAST
        )
        assert server.count("/mnist/train-images-idx3-ubyte.gz") == 1
    got = {f["name"]: sha256_of(f["path"]) for f in manifest["files"]}
    assert got == MNIST_SHA256
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == MNIST_SHA256
    assert all(s.startswith(server.base_url + "/mnist/") for s in manifest["sources"])


def test_real_mnist_local_mirror(tmp_path):
    mirror = str(need_mnist().parent)
    manifest = download_dataset("mnist", tmp_path / "d", tmp_path / "m.json", mirror, **FAST)
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == MNIST_SHA256
    assert sorted(os.listdir(tmp_path / "d")) == sorted(MNIST_SHA256)


# --- The real MNIST for the tests: ../shared, else a verified download into a cache ----------


def test_the_registry_holds_the_shared_checksums_of_mnist():
    """need_mnist's download verifies against the registry: its URLs, sizes and sha256 are the
    rows of ../shared/data/CHECKSUMS.tsv."""
    from afternoon.registry import dataset_entry

    table = SHARED_DATA / "CHECKSUMS.tsv"
    require(table.is_file(), f"../shared/data not present: {table}")
    lines = [line for line in table.read_text().splitlines() if not line.startswith("#")]
    published = {url: (int(size), sha) for url, size, sha, *_ in map(str.split, lines)}
    for entry in dataset_entry("mnist")["files"]:
        assert published[entry["url"]] == (entry["size"], entry["sha256"]), entry["name"]


def test_without_shared_data_mnist_is_downloaded_verified_and_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    www = tmp_path / "www"  # a copy of ../shared/data/mnist, served on 127.0.0.1
    shutil.copytree(need_mnist(), www / "mnist", copy_function=shutil.copyfile)
    absent, cache = tmp_path / "no-shared/mnist", tmp_path / "cache"
    with LoopbackServer(www) as server:
        folder = need_mnist(absent, cache, server.base_url)
        assert folder == cache / "mnist"
        assert {path.name: sha256_of(path) for path in folder.iterdir()} == MNIST_SHA256
        assert {server.count(f"/mnist/{name}") for name in MNIST_SHA256} == {1}
        # cached: verified files are not fetched again, a damaged one is
        damaged = folder / "t10k-labels-idx1-ubyte.gz"
        damaged.write_bytes(b"damaged")
        assert need_mnist(absent, cache, server.base_url) == folder
        assert sha256_of(damaged) == MNIST_SHA256[damaged.name]
        assert [server.count(f"/mnist/{name}") for name in MNIST_SHA256] == [
            2 if name == damaged.name else 1 for name in MNIST_SHA256
        ]
        # a download that fails verification: the test skips, saying where MNIST goes
        server.truncate("/mnist/train-labels-idx1-ubyte.gz", 100)
        (folder / "train-labels-idx1-ubyte.gz").unlink()
        failed = r"not present .*, and downloading MNIST into .*/cache/mnist failed \(.*\): put"
        with pytest.raises(pytest.skip.Exception, match=failed):
            need_mnist(absent, cache, server.base_url)
    assert not (folder / "train-labels-idx1-ubyte.gz").exists()


def test_under_ci_absent_shared_mnist_fails_and_nothing_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with LoopbackServer(tmp_path) as server:
        absent = r"^CI=true: ../shared/data/mnist not present \(.*\): CI always has it"
        with pytest.raises(pytest.fail.Exception, match=absent):
            need_mnist(tmp_path / "absent", tmp_path / "cache", server.base_url)
        assert server.requests == []
    assert not (tmp_path / "cache").exists()


# --- Mirrors that recompress: same data, other gzip bytes (Debian's dataset-fashion-mnist) ----


def recompressed_pair(root: Path, rel: str) -> tuple[dict, bytes]:
    """``root/rel``: the gzip bytes a registry entry describes (mtime 0) with the entry, and a
    recompressed copy of the same data (another mtime and level: other .gz bytes)."""
    published_path, published = make_file(root / "published", rel, seed=7)
    raw = gzip.decompress(published)
    copy = gzip.compress(raw, compresslevel=6, mtime=1_600_000_000)
    assert copy != published and gzip.decompress(copy) == raw
    entry = entry_for(published, Path(rel).name, "http://127.0.0.1:9/unused/" + Path(rel).name)
    entry["uncompressed"] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    return entry, copy


def test_mirror_byte_exact_copy_passes_the_published_sha256(tmp_path, dest_dir):
    entry, _ = recompressed_pair(tmp_path, "toy/a.gz")
    mirror = tmp_path / "published"  # the published bytes themselves
    manifest = download_dataset("toy", dest_dir, tmp_path / "m.json", str(mirror), entries=[entry])
    (record,) = manifest["files"]
    assert record["check"] == "sha256"
    assert (record["size"], record["sha256"]) == (entry["size"], entry["sha256"])
    assert "uncompressed_sha256" not in record


def test_mirror_recompressed_copy_passes_the_uncompressed_sha256(tmp_path, dest_dir):
    entry, copy = recompressed_pair(tmp_path, "toy/a.gz")
    (tmp_path / "mirror/toy").mkdir(parents=True)
    (tmp_path / "mirror/toy/a.gz").write_bytes(copy)
    manifest = download_dataset(
        "toy", dest_dir, tmp_path / "m.json", str(tmp_path / "mirror"), entries=[entry], **FAST
    )
    (record,) = manifest["files"]
    assert record["check"] == "uncompressed_sha256"
    # the manifest describes the file on disk (the copy), and the data it holds
    assert (record["size"], record["sha256"]) == (len(copy), hashlib.sha256(copy).hexdigest())
    assert record["uncompressed_sha256"] == entry["uncompressed"]["sha256"]
    assert (dest_dir / "a.gz").read_bytes() == copy
    again = download_dataset(
        "toy", dest_dir, tmp_path / "m.json", str(tmp_path / "mirror"), entries=[entry], **FAST
    )
    assert again["sources"] == ["cached"] and again["files"] == manifest["files"]


def test_recompressed_copy_from_the_canonical_url_is_refused(tmp_path, dest_dir):
    entry, copy = recompressed_pair(tmp_path, "toy/a.gz")
    (tmp_path / "www/toy").mkdir(parents=True)
    (tmp_path / "www/toy/a.gz").write_bytes(copy)
    with LoopbackServer(tmp_path / "www") as server:
        entry["url"] = server.url("toy/a.gz")
        with pytest.raises(DownloadError, match="wrong size|sha256 mismatch"):
            fetch_file(entry, dest_dir / "a.gz", **FAST)
    assert os.listdir(dest_dir) == []


def test_recompressed_mirror_with_other_data_is_one_line(tmp_path, dest_dir):
    entry, _ = recompressed_pair(tmp_path, "toy/a.gz")
    _, other = make_file(tmp_path / "mirror", "toy/a.gz", seed=8)  # other data, gzip'd
    with pytest.raises(DownloadError, match="neither the published file .*nor a") as err:
        fetch_file(entry, dest_dir / "a.gz", str(tmp_path / "mirror"), dataset="toy", **FAST)
    message = str(err.value)
    assert "\n" not in message
    assert "neither the published file" in message and "nor a recompressed copy" in message
    assert entry["uncompressed"]["sha256"] in message
    assert hashlib.sha256(gzip.decompress(other)).hexdigest() in message
    assert os.listdir(dest_dir) == []


def test_real_debian_fashion_mnist_mirror_is_a_recompressed_copy(tmp_path):
    """Debian's files: every .gz sha256 differs from the published one, the data is the same;
    the dataset card says which check passed."""
    from afternoon.registry import dataset_entry
    from afternoon.stages.preprocess import preprocess_dataset

    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror/fashion_mnist").symlink_to(need_debian_fashion_mnist())
    manifest = download_dataset(
        "fashion_mnist", tmp_path / "raw", tmp_path / "raw/M.json", str(tmp_path / "mirror"), **FAST
    )
    published = {f["name"]: f for f in dataset_entry("fashion_mnist")["files"]}
    for record in manifest["files"]:
        assert record["check"] == "uncompressed_sha256"
        assert record["sha256"] != published[record["name"]]["sha256"]
        assert record["uncompressed_sha256"] == published[record["name"]]["uncompressed"]["sha256"]
    card = preprocess_dataset(
        "fashion_mnist", tmp_path / "raw/M.json", tmp_path / "f.npz", tmp_path / "f.card.json"
    )
    assert {f["check"] for f in card["source_files"]} == {"uncompressed_sha256"}
    assert all("recompressed" in f["verified_by"] for f in card["source_files"])
    assert card["splits"]["train"]["n"] == 60000 and card["splits"]["test"]["n"] == 10000
