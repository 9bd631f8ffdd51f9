"""Misbehaving dependencies on loopback. ``FaultyS3``: an HTTP proxy in front of a real S3 server
(moto) that passes calls through, or holds, delays, drops or never answers the ones a rule
picks. ``FreezingTcpProxy``: a TCP relay in front of any server (PostgreSQL) that can hang,
refuse or slow every connection.

Rules see ``(method, path_and_query)`` and return ``None`` (pass through), ``"hold"`` (wait
until ``release()`` or ``stop()``, then pass), a number of seconds to delay, ``"drop"`` (close
the connection without an answer) or ``"blackhole"`` (keep the connection open, never answer,
until ``stop()``). Everything is bounded: a held or blackholed call waits at most
``max_wait`` seconds.
"""

import http.client
import select
import socket
import struct
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


class FreezingTcpProxy:
    """A TCP relay on loopback in front of a server (PostgreSQL in the tests), for the failures
    an HTTP proxy cannot play:

    - ``freeze()``: no byte moves either way and every connection stays open, new ones
      included: a server that hangs (its kernel still accepts and acknowledges, nothing
      answers). ``thaw()`` lets the bytes move again.
    - ``refuse()``: every connection is reset, new ones as soon as they arrive: a server that
      is down. ``restore()`` undoes it.
    - ``delay``: seconds added before each piece relayed: a slow link that still works.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.delay = 0.0
        self._moving = threading.Event()
        self._moving.set()
        self._refusing = False
        self._stopped = False
        self._lock = threading.Lock()
        self._sockets: list = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> "FreezingTcpProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def freeze(self) -> None:
        self._moving.clear()

    def thaw(self) -> None:
        self._moving.set()

    def refuse(self) -> None:
        self._refusing = True
        self._reset_all()

    def restore(self) -> None:
        self._refusing = False

    def stop(self) -> None:
        self._stopped = True
        self._moving.set()
        self.listener.close()
        self._reset_all()

    def _reset_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _reset(sock)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._refusing:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source, target) -> None:
        try:
            while not self._stopped:
                self._moving.wait()
                readable, _, _ = select.select([source], [], [], 0.2)
                if not readable or not self._moving.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                target.sendall(data)
        except (OSError, ValueError):  # reset, or closed (fd -1) by stop() or the other pump
            pass
        _reset(source)
        _reset(target)


def _reset(sock) -> None:
    """Close ``sock`` with a reset (RST), as a dead peer's host would answer."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
