"""Transient tracking-store errors (a locked sqlite database, a refused, lost or timed-out
connection, a 5xx or 429 answer) and retrying them with jittered exponential backoff."""

from __future__ import annotations

import logging
import random
import re
import time

from afternoon.tracking.provenance import first_line

log = logging.getLogger(__name__)

RETRY_BUDGET_S = 60.0  # with_retries gives up once its next try would start later than this
_TRANSIENT = re.compile(
    r"database (table )?is locked|connection (refused|reset|aborted)|max retries exceeded|"
    r"remote end closed|temporarily unavailable|bad gateway|service unavailable|gateway time"
    r"|error code 5\d\d|status( code)? 5\d\d|too many (429|5\d\d) error|timed out",
    re.IGNORECASE,
)
_CAUSE = re.compile(  # the words that say why, inside MLflow's and urllib3's long messages
    r"\[Errno -?\d+\] [^\"'()]+|read timed out|too many \d+ error responses|"
    r"database (table )?is locked|remote end closed connection without response|"
    r"connection (refused|reset|aborted)|name or service not known",
    re.IGNORECASE,
)
_NET_CLASSES = {"ConnectionError", "NewConnectionError", "ProtocolError", "ConnectTimeout"}
_NET_CLASSES |= {"ReadTimeout", "ReadTimeoutError", "Timeout"}


def is_transient(err: BaseException) -> bool:
    """A sqlite lock or a lost/refused server connection, anywhere in the exception chain."""
    seen, stack = set(), [err]
    while stack:
        exc = stack.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, ConnectionError) or _TRANSIENT.search(str(exc)):
            return True
        if getattr(exc, "error_code", None) == "TEMPORARILY_UNAVAILABLE" or any(
            c.__name__ in _NET_CLASSES and c.__module__.split(".")[0] in ("requests", "urllib3")
            for c in type(exc).__mro__
        ):
            return True
        stack += [exc.__cause__, exc.__context__]
    return False


def why(err: BaseException) -> str:
    """The cause of a (transient) error in a few words, else its first line."""
    seen, exc = set(), err
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if match := _CAUSE.search(str(exc)):
            return match.group(0).strip()
        exc = exc.__cause__ or exc.__context__
    return first_line(err)


def with_retries(fn, *args, attempts: int = 8, **kwargs):
    """``fn(*args, **kwargs)``, retried with jittered exponential backoff on transient errors
    (~12 s over 8 tries; never retrying past RETRY_BUDGET_S). Retries are logged at INFO."""
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            delay = random.uniform(0.5, 1.0) * min(5.0, 0.2 * 2 ** (attempt - 1))
            late = time.monotonic() + delay - started > RETRY_BUDGET_S
            if attempt >= attempts or late or not is_transient(err):
                raise
            what = f"{getattr(fn, '__name__', 'call')}: {why(err)}"
            log.info(f"{what} (retry {attempt}/{attempts - 1} in {delay:.1f} s)")
            time.sleep(delay)
