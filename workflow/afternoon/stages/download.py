"""Stage download: fetch a registry dataset's files (cache check, HTTP or mirror transfer, size
and sha256 verification), then write the manifest the preprocess stage reads.

A file passes one of two checks, and the manifest records which (``check``, see ``CHECKS``): its
published size and sha256, or, for a file from a mirror whose registry entry gives
``uncompressed: {size, sha256}``, the size and sha256 of its gunzipped bytes. Many site mirrors
(Debian's ``dataset-fashion-mnist`` among them) recompress the files with other gzip headers: the
data is the same, the ``.gz`` bytes are not.

Every file is written to a temporary ``.<name>.*`` file beside its destination
(``fileio.atomic_path``), verified (size first, then sha256) and only then moved onto the
destination with ``os.replace``; a failed
fetch leaves neither the temporary file nor a destination behind. Transient HTTP failures
(connection refused/reset, timeouts, HTTP 5xx) are retried with exponential backoff; HTTP 4xx and
verification failures are not retried (a server that sends wrong bytes once sends them again).

A mirror need not hold every dataset: a file it does not have (no such file in a mirror directory
that exists, or HTTP 404 from an http(s) mirror) is fetched from its canonical URL instead, with a
warning, and checked against the published sha256 only. A mirror directory that does not exist is
an error (a mistyped ``data.mirror`` must not send the study to the internet unnoticed).
"""

import argparse
import logging
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pooch
import requests

from afternoon.errors import DownloadError
from afternoon.fileio import atomic_path, is_write_error_on, sha256_file, write_json_atomic
from afternoon.registry import CHECKS, dataset_entry
from afternoon.verify import is_cached, verify

log = logging.getLogger(__name__)

# Connection refused/reset, timeouts and transfers cut short; HTTP 5xx is checked separately.
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _reason(exc: Exception) -> str:
    """A short one-line reason for a requests failure (``[Errno 111] Connection refused``...)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    text = " ".join(str(exc).split())
    match = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    return match.group(0) if match else f"{type(exc).__name__}: {text[:200]}"


def _is_transient(exc: Exception) -> bool:
    """Connection refused/reset, timeouts, broken transfers and HTTP 5xx are worth a retry."""
    if isinstance(exc, requests.HTTPError):
        return exc.response is not None and exc.response.status_code >= 500
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    return isinstance(exc, TRANSIENT)


class _NotThere(DownloadError):
    """The file is not at that place (HTTP 404, or no such file in a mirror directory)."""


def _http_get(url: str, tmp: Path, retries: int, backoff: float, timeout: float, progress: bool):
    """Download ``url`` into ``tmp`` via pooch, retrying transient failures ``retries`` times."""
    downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            downloader(url, str(tmp), None)
            return
        except requests.RequestException as exc:
            reason = _reason(exc)
            if isinstance(exc, requests.HTTPError) and not _is_transient(exc):
                missing = exc.response is not None and exc.response.status_code == 404
                raise (_NotThere if missing else DownloadError)(f"{reason} for {url}") from exc
            if not _is_transient(exc):
                raise DownloadError(f"could not fetch {url}: {reason}") from exc
            if attempt == attempts - 1:
                raise DownloadError(
                    f"could not reach {url} after {attempts} attempts: {reason}"
                ) from exc
            delay = backoff * 2**attempt
            log.warning("%s: %s; retry %d/%d in %.2fs", url, reason, attempt + 1, retries, delay)
            time.sleep(delay)


def _local_mirror(mirror_base: str) -> Path | None:
    """The directory of a local (plain path or ``file://``) mirror; None for an http(s) mirror."""
    parsed = urlparse(mirror_base)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(mirror_base)


def _copy_from_mirror(root: Path, parts: list[str], tmp: Path) -> str:
    """Copy ``root/<parts...>`` into ``tmp``; returns the source path as a string."""
    if not root.is_dir():
        raise DownloadError(f"mirror directory {root} does not exist")
    src = root.joinpath(*parts)
    if not src.is_file():
        raise _NotThere(f"mirror file {src} does not exist")
    try:
        shutil.copyfile(src, tmp)
    except OSError as exc:
        if exc.filename is not None and is_write_error_on(exc, tmp):
            raise  # a full disk or read-only dest: atomic_path names the destination
        raise DownloadError(f"could not copy mirror file {src}: {exc}") from exc
    return str(src)


def fetch_file(
    entry: dict,
    dest: Path,
    mirror_base: str | None = None,
    *,
    dataset: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Fetch one registry file entry (name, url, size, sha256) to ``dest``, verified; returns dest.

    A ``dest`` that already matches is used without network access; one that does not is deleted
    and fetched again. With ``mirror_base`` the file is ``<mirror_base>/<dataset>/<name>``
    (``<dataset>/`` left out when ``dataset`` is None): an http(s) URL is downloaded, a directory
    or ``file://`` URL is copied; a file the mirror does not have comes from the entry's canonical
    URL. ``retries`` counts the extra attempts after the first on
    transient HTTP errors, waiting ``backoff * 2**attempt`` seconds before each.
    """
    opts = (dataset, retries, backoff, timeout, progress)
    return _fetch(entry, Path(dest), mirror_base, *opts)[0]


def _fetch(entry, dest, mirror_base, dataset, retries, backoff, timeout, progress):
    """:func:`fetch_file`, returning ``(dest, source, check)``; source is "cached" on a cache hit,
    check the name of the check the file passed (``CHECKS``)."""
    if check := is_cached(entry, dest):
        log.info("cached %s", dest)
        return dest, "cached", check
    http = (retries, backoff, timeout, progress)
    with atomic_path(dest) as tmp:  # renamed onto dest only if verify() passes
        from_mirror = False
        if mirror_base:
            parts = [p for p in (dataset, entry["name"]) if p]
            try:
                source, from_mirror = _from_mirror(mirror_base, parts, dest, tmp, http), True
            except _NotThere as missing:
                log.warning("%s: fetching %s from its canonical URL", missing, entry["name"])
                source = _from_canonical(entry["url"], dest, tmp, http, f"{missing}; ")
        else:
            source = _from_canonical(entry["url"], dest, tmp, http)
        check = verify(tmp, entry, source, recompressed_ok=from_mirror)
    log.info("verified %s: %s", dest, CHECKS[check])
    return dest, source, check


def _from_mirror(mirror_base: str, parts: list[str], dest: Path, tmp: Path, http: tuple) -> str:
    """Copy or download ``<mirror_base>/<parts...>`` into ``tmp``; returns where it came from.
    Raises ``_NotThere`` when the mirror does not have the file."""
    local = _local_mirror(mirror_base)
    if local is not None:
        log.info("copying %s from mirror %s -> %s", parts[-1], local, dest)
        return _copy_from_mirror(local, parts, tmp)
    source = "/".join([mirror_base.rstrip("/"), *parts])
    log.info("fetching %s -> %s", source, dest)
    _http_get(source, tmp, *http)
    return source


def _from_canonical(url: str, dest: Path, tmp: Path, http: tuple, why: str = "") -> str:
    """Download the canonical ``url`` into ``tmp``; a failure's message starts with ``why``
    (the mirror's reason for not serving the file, when it was asked first)."""
    log.info("fetching %s -> %s", url, dest)
    try:
        _http_get(url, tmp, *http)
    except DownloadError as exc:
        if not why:
            raise
        raise DownloadError(f"{why}its canonical URL: {exc}") from exc
    return url


def download_dataset(
    name: str,
    dest_dir: Path,
    manifest_path: Path,
    mirror: str | None = None,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
    entries: list[dict] | None = None,
) -> dict:
    """Fetch and verify every file of registry dataset ``name`` into ``dest_dir``; write manifest.

    The manifest (``{"dataset", "files": [{name, role, url, size, sha256, path, check}]}``, size
    and sha256 those of the file on disk, check the one it passed (``CHECKS``), plus
    ``uncompressed_sha256`` for a recompressed copy) is written atomically to ``manifest_path``
    and returned with ``sources``: per file the URL or mirror path used, or ``"cached"`` when the
    file was already present and verified. ``entries`` replaces
    the registry's file list (tests, ad-hoc data sets); ``digits`` has none: an empty manifest.
    """
    dest_dir, manifest_path = Path(dest_dir), Path(manifest_path)
    if entries is None:
        entries = dataset_entry(name).get("files") or []
    files, sources = [], []
    for entry in entries:
        dest, source, check = _fetch(
            entry, dest_dir / entry["name"], mirror, name, retries, backoff, timeout, progress
        )
        record = {"name": entry["name"], "role": entry.get("role"), "url": entry.get("url")}
        record.update(size=entry["size"], sha256=entry["sha256"], path=str(dest), check=check)
        if check == "uncompressed_sha256":
            record.update(size=dest.stat().st_size, sha256=sha256_file(dest))
            record["uncompressed_sha256"] = entry["uncompressed"]["sha256"]
        files.append(record)
        sources.append(source)
    manifest = {"dataset": name, "files": files}
    # The file on disk does not say where the bytes came from (URL, mirror, cache): it is the same
    # for the same verified files, so a re-download does not look like new data downstream.
    write_json_atomic(manifest_path, manifest)
    log.info("wrote manifest %s (%d files)", manifest_path, len(files))
    return {**manifest, "sources": sources}


def main(args: argparse.Namespace) -> None:
    manifest = Path(args.manifest)  # the verified files go beside it
    download_dataset(args.dataset, manifest.parent, manifest, args.mirror, retries=args.retries)
