"""A dataset file checked against its registry entry (``registry.CHECKS``): its published size
and sha256, or, for a mirror's recompressed copy, the size and sha256 of its gunzipped bytes.
Each failure is one line naming the file, the source and what differs."""

import gzip
import hashlib
import logging
import zlib
from pathlib import Path

from afternoon.errors import DownloadError
from afternoon.fileio import sha256_file

log = logging.getLogger(__name__)


def _gunzipped_digest(path: Path) -> tuple[int, str] | None:
    """Size and sha256 of the gunzipped bytes of ``path``; None when it is not valid gzip."""
    digest, size = hashlib.sha256(), 0
    try:
        with gzip.open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    except (OSError, EOFError, zlib.error):
        return None
    return size, digest.hexdigest()


def _matches_uncompressed(path: Path, entry: dict) -> bool:
    """True when the entry gives its uncompressed size and sha256 and ``path`` gunzips to them."""
    want = entry.get("uncompressed")
    return bool(want) and _gunzipped_digest(path) == (want["size"], want["sha256"])


def _check_passed(path: Path, entry: dict, recompressed_ok: bool) -> str | None:
    """The name of the check (``CHECKS``) that ``path`` passes, or None."""
    if path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]:
        return "sha256"
    if recompressed_ok and _matches_uncompressed(path, entry):
        return "uncompressed_sha256"
    return None


def is_cached(entry: dict, dest: Path) -> str | None:
    """The check ``dest`` passes if it already holds the entry's data (exact, or a recompressed
    copy a mirror delivered earlier), else None; a mismatching file is deleted."""
    if not dest.is_file():
        return None
    if check := _check_passed(dest, entry, recompressed_ok=True):
        return check
    log.warning("%s does not match the registry size/sha256: deleting and fetching again", dest)
    dest.unlink()
    return None


def _looks_like_html(path: Path) -> bool:
    """True if the file starts (after whitespace) with ``<!DOCTYPE`` or ``<html``."""
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip().lower()
    return head.startswith((b"<!doctype", b"<html"))


def verify(path: Path, entry: dict, source: str, recompressed_ok: bool = False) -> str:
    """Check size, then sha256, of ``path`` against ``entry``; returns the check that passed
    (``CHECKS``). With ``recompressed_ok`` (a mirror) a file whose gunzipped bytes match the
    entry's ``uncompressed`` size and sha256 passes too. A mismatch is a one-line error."""
    name, want_size, want_sha = entry["name"], entry["size"], entry["sha256"]
    size = path.stat().st_size
    got_sha = sha256_file(path) if size == want_size else None
    if size == want_size and got_sha == want_sha:
        return "sha256"
    recompressed = recompressed_ok and entry.get("uncompressed")
    got = _gunzipped_digest(path) if recompressed else None
    if recompressed and got == (entry["uncompressed"]["size"], entry["uncompressed"]["sha256"]):
        return "uncompressed_sha256"
    if _looks_like_html(path):
        raise DownloadError(
            f"{source} returned an HTML page, not {name} "
            f"(expected {want_size} bytes, got {size} bytes of HTML)"
        )
    if recompressed:
        want = entry["uncompressed"]
        got_text = "not gzip" if got is None else f"{got[0]} bytes, sha256 {got[1]}"
        raise DownloadError(
            f"{name} from {source} is neither the published file ({want_size} bytes, sha256 "
            f"{want_sha}) nor a recompressed copy of it (uncompressed: expected {want['size']} "
            f"bytes, sha256 {want['sha256']}; got {got_text})"
        )
    if size < want_size:
        raise DownloadError(
            f"{name} from {source} is truncated: expected {want_size} bytes, got {size} bytes"
        )
    if size != want_size:
        raise DownloadError(
            f"{name} from {source} has the wrong size: expected {want_size} bytes, got {size} bytes"
        )
    raise DownloadError(
        f"sha256 mismatch for {name} from {source}: expected {want_sha}, got {got_sha}"
    )
