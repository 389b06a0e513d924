"""A loopback HTTP server for tests: serves a directory, and makes chosen paths misbehave.

Usage::

    from helpers.httpserver import LoopbackServer

    with LoopbackServer(tmp_path / "www") as server:
        server.fail("/ds/a.gz", 500, times=2)   # two HTTP 500s, then the real file
        server.fail("/ds/b.gz", 404)            # always 404
        server.html("/ds/c.gz")                 # a 200 HTML page instead of the file
        server.truncate("/ds/d.gz", 100)        # only the first 100 bytes (honest Content-Length)
        url = server.url("/ds/a.gz")            # "http://127.0.0.1:<port>/ds/a.gz"
        ...
        assert server.count("/ds/a.gz") == 3    # requests seen for that path
        server.stop()                           # later requests: connection refused

It binds only to 127.0.0.1 on a free port (port 0), runs ``ThreadingHTTPServer`` in a daemon
thread and is stopped on leaving the ``with`` block (``stop`` is idempotent). Paths are
URL paths starting with "/". Every request's path is recorded in ``server.requests``.
"""

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
    b"<body><p>Please sign in to continue.</p></body></html>\n"
)


class _Handler(SimpleHTTPRequestHandler):
    """Serves files from the server's directory unless a hook for the path says otherwise."""

    def do_GET(self):  # noqa: N802 (http.server naming)
        owner: LoopbackServer = self.server.owner
        action = owner._record_and_pick(self.path.split("?", 1)[0])
        if action is None:
            return super().do_GET()
        kind, arg = action
        if kind == "status":
            return self._send(arg, b"error %d\n" % arg, "text/plain")
        if kind == "html":
            return self._send(200, HTML_PAGE, "text/html")
        body = (Path(self.directory) / self.path.lstrip("/")).read_bytes()[:arg]
        return self._send(200, body, "application/octet-stream")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (base-class signature)
        pass


class LoopbackServer:
    """Serve ``root`` over HTTP on 127.0.0.1, with per-path failure hooks (see module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[str] = []
        self._hooks: dict[str, list] = {}
        self._lock = threading.Lock()
        handler = functools.partial(_Handler, directory=str(self.root))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self._stopped = False

    def url(self, path: str = "") -> str:
        """The full URL of ``path`` ("/a/b.gz" or "a/b.gz") on this server."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def fail(self, path: str, status: int, times: int | None = None) -> None:
        """Answer ``path`` with HTTP ``status``: ``times`` times then normally, or always (None)."""
        self._set(path, ["status", status, times])

    def html(self, path: str) -> None:
        """Answer ``path`` with a 200 HTML page (like a login or error portal) instead of data."""
        self._set(path, ["html", None, None])

    def truncate(self, path: str, nbytes: int) -> None:
        """Answer ``path`` with only the first ``nbytes`` of the file (Content-Length matches)."""
        self._set(path, ["truncate", nbytes, None])

    def count(self, path: str) -> int:
        """How many requests were made for ``path``."""
        key = "/" + path.lstrip("/")
        with self._lock:
            return self.requests.count(key)

    def stop(self) -> None:
        """Shut the server down and close its socket; later connections are refused."""
        if not self._stopped:
            self._stopped = True
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> "LoopbackServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _set(self, path: str, hook: list) -> None:
        with self._lock:
            self._hooks["/" + path.lstrip("/")] = hook

    def _record_and_pick(self, path: str):
        """Record a request; return ``(kind, arg)`` for a hooked path, None to serve the file."""
        with self._lock:
            self.requests.append(path)
            hook = self._hooks.get(path)
            if hook is None:
                return None
            kind, arg, times = hook
            if times is not None:
                if times <= 0:
                    return None
                hook[2] = times - 1
            return kind, arg
