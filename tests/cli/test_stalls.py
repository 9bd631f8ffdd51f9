"""A server (or a link) that drips: a byte now and then, never silent long enough for a read
to time out. `courier` must not be held for ever: a transfer that moves less than 32 KiB in
a period of `--timeout` seconds counts as stalled, an answer's head must arrive within twice
that, and a stalled transfer fails like a cut one (after its retries)."""

import os
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .conftest import courier
from .stub import json_body, sha256

TOKEN = "acb_" + "t" * 40
TIMEOUT = "2"  # --timeout: the stall window, small so that the tests are quick
# A test's courier run ends well within this, or it was held by the drip.
BOUND = 45


@contextmanager
def drip_server(handle):
    """A loopback server whose handlers may drip; ``stop`` ends every drip at teardown."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _serve(self) -> None:
            try:
                handle(self, stop)
            except OSError:
                self.close_connection = True

        do_GET = do_PUT = do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def drip(h, stop, data: bytes, every: float = 0.2) -> None:
    for i in range(len(data)):
        if stop.is_set():
            return
        h.wfile.write(data[i : i + 1])
        h.wfile.flush()
        time.sleep(every)


def send_json(h, data) -> None:
    body = json_body(data)
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def listing_or_file_head(h, base: str, data: bytes) -> bool:
    """Answer ``/listing`` (one file, a.bin, linked at ``/f``) and return True; for any other
    path send the file's head (its body is the caller's to send) and return False."""
    if h.path == "/listing":
        item = {"path": "a.bin", "size": len(data), "sha256": sha256(data)}
        send_json(h, {"artifacts": [{**item, "url": f"{base}/f"}]})
        return True
    h.send_response(200)
    h.send_header("Content-Length", str(len(data)))
    h.send_header("X-Checksum-Sha256", sha256(data))
    h.end_headers()
    return False


def run(*args, env):
    return courier(*args, "--timeout", TIMEOUT, "--retries", "1", env=env, timeout=BOUND)


def test_a_download_dripping_its_body_is_given_up(tmp_path):
    data = os.urandom(1024 * 1024)

    def handle(h, stop):
        if listing_or_file_head(h, base, data):
            return
        drip(h, stop, data)

    with drip_server(handle) as base:
        result = run("download", f"{base}/listing", "-o", str(tmp_path), env={})
    assert result.code == 1, result.output
    assert "stalled" in result.stderr
    assert not (tmp_path / "a.bin").exists()


def test_an_answer_dripping_its_head_is_given_up():
    def handle(h, stop):
        h.wfile.write(b"HTTP/1.1 200 OK\r\n")
        drip(h, stop, b"X-Slow: " + b"a" * 60000 + b"\r\n")

    with drip_server(handle) as base:
        result = run("whoami", env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN})
    assert result.code == 1, result.output
    assert "stalled" in result.stderr


def test_an_answer_dripping_its_json_is_given_up():
    def handle(h, stop):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        drip(h, stop, b'{"id": 1, "name": "' + b"a" * 99980 + b'"}')

    with drip_server(handle) as base:
        result = run("whoami", env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN})
    assert result.code == 1, result.output
    assert "stalled" in result.stderr


def test_a_server_reading_an_upload_drop_by_drop_is_given_up(tmp_path):
    """The server takes the body a little at a time: the same rule holds for what goes out.
    (Each socket write is bounded as a whole by the connect timeout already, CPython's
    sendall: at the default --timeout this rule is the looser of the two.)"""

    def handle(h, stop):
        if h.command == "GET":
            return send_json(h, {"next": None, "results": []})
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        while not stop.is_set():  # about 10 KiB/s, in pieces: never silent for long
            if not h.rfile.read1(1024):
                return
            time.sleep(0.1)

    (tmp_path / "big.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    with drip_server(handle) as base:
        result = run(
            "upload",
            str(tmp_path / "big.bin"),
            env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN, "COURIER_BUILD": "7"},
        )
    assert result.code == 1, result.output
    assert "stalled" in result.stderr


def test_a_slow_but_steady_download_is_not_a_stall(tmp_path):
    """Above the floor (32 KiB per window), in small pieces: it completes."""
    rate = 64 * 1024
    data = os.urandom(5 * rate)

    def handle(h, stop):
        if listing_or_file_head(h, base, data):
            return
        piece = rate // 10
        for at in range(0, len(data), piece):
            h.wfile.write(data[at : at + piece])
            h.wfile.flush()
            time.sleep(0.1)

    with drip_server(handle) as base:
        result = run("download", f"{base}/listing", "-o", str(tmp_path), env={})
    assert result.code == 0, result.output
    assert (tmp_path / "a.bin").read_bytes() == data


def test_a_timeout_that_would_stall_everything_is_a_usage_error():
    for value in ("0", "-5", "nan", "inf"):
        result = courier("whoami", "--timeout", value, env={"COURIER_URL": "http://127.0.0.1:9"})
        assert result.code == 2, (value, result.output)
