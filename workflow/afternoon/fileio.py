"""Small file helpers shared by every stage: hashing and atomic writes (temp file + rename)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Write failures the user acts on: permissions, a read-only or full file system, a quota.
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def is_write_error_on(err: OSError, tmp: Path | None) -> bool:
    """True for a write error on ``tmp`` (or on any file when None), or on no file in particular
    (a full disk while writing)."""
    if err.errno not in WRITE_ERRNOS:
        return False
    return (
        err.filename is None or tmp is None or str(tmp) in map(str, (err.filename, err.filename2))
    )


@contextlib.contextmanager
def naming_write_errors(target: str | Path, tmp: str | Path | None = None) -> Iterator[None]:
    """Re-raise a write error on ``tmp`` (None: on any file) naming ``target`` instead: the
    file the user knows, not a temp name (the CLI prints it as one line)."""
    try:
        yield
    except OSError as err:
        if not is_write_error_on(err, None if tmp is None else Path(tmp)):
            raise
        raise OSError(err.errno, err.strerror, str(target)) from err


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``target`` (same suffix); rename it onto ``target`` on success.

    On any exception the temp file is removed and an existing ``target`` is left untouched; a
    write error on the temp file (a full disk, a read-only directory) names ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with naming_write_errors(target):
        fd, name = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent
        )
    os.close(fd)
    tmp = Path(name)
    try:
        with naming_write_errors(target, tmp):
            yield tmp
            if tmp.exists():  # mkstemp makes 0600 files: give the result the usual umask mode
                os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, data) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path):
    """Parse a JSON file; unreadable or invalid JSON is a one-line error naming the file."""
    from afternoon.errors import DataFormatError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path}: cannot read JSON ({err})") from None
