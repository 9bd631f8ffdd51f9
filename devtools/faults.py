"""A misbehaving object store on loopback: an HTTP proxy in front of a real S3 server (moto)
that passes calls through, or holds, delays, drops or never answers the ones a rule picks.

Rules see ``(method, path_and_query)`` and return ``None`` (pass through), ``"hold"`` (wait
until ``release()`` or ``stop()``, then pass), a number of seconds to delay, ``"drop"`` (close
the connection without an answer) or ``"blackhole"`` (keep the connection open, never answer,
until ``stop()``). Everything is bounded: a held or blackholed call waits at most
``max_wait`` seconds.
"""

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

Rule = Callable[[str, str], object]


def is_object_completion(method: str, path: str) -> bool:
    """The call that makes an uploaded object exist: CompleteMultipartUpload
    (``POST /bucket/key?uploadId=...``) for a large one, PutObject (``PUT /bucket/blobs/...``,
    not a part) for one smaller than a part."""
    if method == "POST" and "uploadId=" in path:
        return True
    return method == "PUT" and "/blobs/" in path and "uploadId=" not in path


class FaultyS3:
    def __init__(self, upstream: str, *, max_wait: float = 60) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.max_wait = max_wait
        self.rule: Rule = lambda method, path: None
        self.calls: list[tuple[str, str]] = []
        self.held = threading.Event()  # set when a call starts being held
        self._release = threading.Event()
        self._stopped = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and Expect: 100-continue, as boto uses

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultyS3":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def release(self) -> None:
        self._release.set()

    def stop(self) -> None:
        self._stopped.set()
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        self.calls.append((method, path))
        action = self.rule(method, path)
        if action == "drop":
            handler.close_connection = True
            return
        if action == "blackhole":
            self._stopped.wait(self.max_wait)
            handler.close_connection = True
            return
        if action == "hold":
            self.held.set()
            self._release.wait(self.max_wait)
        elif isinstance(action, int | float):
            time.sleep(action)
        headers = {
            name: value
            for name, value in handler.headers.items()
            if name.lower() not in {"connection", "expect", "transfer-encoding"}
        }
        upstream = http.client.HTTPConnection(*self.upstream, timeout=self.max_wait)
        try:
            upstream.request(method, path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):  # the real server went away: so do we
            handler.close_connection = True
            return
        finally:
            upstream.close()
        handler.send_response(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in {"connection", "transfer-encoding", "content-length"}:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(data)
