"""Loopback servers for what the real service never does: a hostile share listing, a flaky
upstream, a connection cut in the middle of a download. They speak the agreed contract."""

import hashlib
import json
import socket
import threading
from collections.abc import Callable
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: dict = {}  # (method, path) -> callable(handler) -> (status, headers, body)
    seen: list

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, dict(self.headers)))
        route = self.routes.get((self.command, self.path.split("?")[0]))
        if route is None:
            status, headers, body = 404, {}, b'{"detail": "Not found.", "code": "not_found"}'
        else:
            status, headers, body = route(self)
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = _serve


@contextmanager
def stub_server(routes: dict[tuple[str, str], Callable]):
    """A threaded HTTP server on a free loopback port; yields (base URL, requests seen)."""
    seen: list = []
    handler = type("Handler", (StubHandler,), {"routes": routes, "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def json_body(data) -> bytes:
    return json.dumps(data).encode()


def file_route(data: bytes, digest: str | None = None):
    def route(handler):
        return 200, {"X-Checksum-Sha256": digest or sha256(data)}, data

    return route


@contextmanager
def tcp_server(handle: Callable[[socket.socket], None]):
    """A loopback TCP listener on a free port; each connection goes to ``handle`` on a thread
    of its own. Yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@contextmanager
def answering_server(answer: bytes):
    """A loopback server that reads a request's head, writes ``answer`` as it is and closes:
    for what http.server cannot play (a broken head, an answer to CONNECT). Yields its base
    URL and the request lines it saw."""
    seen: list[bytes] = []

    def handle(connection: socket.socket) -> None:
        with connection:
            head = b""
            while b"\r\n\r\n" not in head and (data := connection.recv(4096)):
                head += data
            seen.append(head.split(b"\r\n", 1)[0])
            connection.sendall(answer)

    with tcp_server(handle) as port:
        yield f"http://127.0.0.1:{port}", seen


@contextmanager
def cutting_proxy(upstream_port: int, cut_after: int):
    """A TCP proxy to ``upstream_port`` that, once, closes a connection after forwarding
    ``cut_after`` bytes of answers on it: a download cut in the middle. Yields its port."""
    state = {"cut": False, "cuts": 0}
    lock = threading.Lock()

    def pump(src, dst, limit: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit:
                    with lock:
                        cut_now = not state["cut"] and sent + len(data) > cut_after
                        if cut_now:
                            state["cut"] = True
                            state["cuts"] += 1
                    if cut_now:
                        dst.sendall(data[: max(cut_after - sent, 0)])
                        break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def connect(client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", upstream_port))
        threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
        pump(upstream, client, True)

    with tcp_server(connect) as port:
        yield port, state
