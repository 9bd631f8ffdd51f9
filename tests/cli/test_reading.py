"""How courier receives a body: into buffers it reuses where the answer allows, as it comes
otherwise. A loopback server that also says on which connection each request came."""

import gzip
import os
import queue
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from courier import pace

from .conftest import COURIER, courier
from .stub import file_route, json_body, sha256, stub_server

DATA = os.urandom(3 * 1024 * 1024 + 17)
BUFFER = 256 * 1024
MiB = 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: list  # the client port of each request

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.connections.append(self.client_address[1])
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(DATA), 100_000):
                piece = DATA[start : start + 100_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        body = b"" if self.path == "/empty" else DATA
        if self.path == "/gzip":
            body = gzip.compress(DATA, compresslevel=1)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/cut":
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)


@contextmanager
def server():
    connections: list = []
    handler = type("H", (Handler,), {"connections": connections})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", connections
    finally:
        httpd.shutdown()
        httpd.server_close()


def buffers(n: int = 3) -> queue.Queue:
    pool: queue.Queue = queue.Queue()
    for _ in range(n):
        pool.put(bytearray(BUFFER))
    return pool


def session() -> requests.Session:
    s = requests.Session()
    pace.mount(s)
    return s


def read_all(response, pool) -> tuple[bytes, list]:
    """What a caller does: use each piece, then give its buffer back."""
    received, kinds = bytearray(), []
    for piece in pace.iter_body_into(response, pool):
        received += piece
        kinds.append(piece.obj if isinstance(piece, memoryview) else type(piece))
        if isinstance(piece, memoryview):
            pool.put(piece.obj)
    return bytes(received), kinds


def test_a_body_of_known_length_is_received_into_the_callers_buffers():
    pool = buffers()
    own = set(map(id, list(pool.queue)))
    with server() as (url, connections), session() as s:
        with s.get(f"{url}/file", stream=True) as response:
            received, kinds = read_all(response, pool)
        assert received == DATA
        assert len(kinds) >= len(DATA) // BUFFER  # at most a buffer per piece
        assert all(id(kind) in own for kind in kinds)  # no new object per piece
        # Read to its end, the connection serves the next request.
        with s.get(f"{url}/file", stream=True) as response:
            assert read_all(response, pool)[0] == DATA
    assert len(connections) == 2 and connections[0] == connections[1]


def test_a_body_cut_short_is_an_error_and_its_connection_is_not_reused():
    pool = buffers()
    received = bytearray()
    with server() as (url, connections), session() as s:
        with (
            s.get(f"{url}/cut", stream=True) as response,
            pytest.raises(requests.ConnectionError),
        ):
            for piece in pace.iter_body_into(response, pool):
                received += piece
                pool.put(piece.obj)
        # What came before the error: half of it, nothing invented.
        assert received == DATA[: len(DATA) // 2]
        with s.get(f"{url}/file", stream=True) as response:
            assert read_all(response, pool)[0] == DATA
    assert len(connections) == 2 and connections[0] != connections[1]


def test_an_empty_body_leaves_its_connection_fit_for_the_next_request():
    """Read to its end, the connection is back in the pool: the next request that takes it
    (another of the session's, before this answer is closed) gets its answer on it."""
    pool = buffers()
    with (
        server() as (url, connections),
        session() as s,
        s.get(f"{url}/empty", stream=True) as response,
    ):
        assert read_all(response, pool)[0] == b""
        with s.get(f"{url}/file", stream=True) as following:
            assert read_all(following, pool)[0] == DATA
    assert len(connections) == 2 and connections[0] == connections[1]


@pytest.mark.parametrize("path", ["/chunked", "/gzip"])
def test_a_body_sent_chunked_or_encoded_comes_as_before(path):
    """Those are read the ordinary way: http.client joins the chunks, urllib3 undoes the
    coding (a server may send one though courier asks for none)."""
    pool = buffers()
    with server() as (url, _), session() as s, s.get(f"{url}{path}", stream=True) as response:
        received, kinds = read_all(response, pool)
    assert kinds and set(kinds) == {bytes}
    assert received == DATA


@pytest.mark.parametrize(
    "lengths",
    [
        pytest.param(lambda n: [str(n), str(n)], id="sent-twice"),
        pytest.param(lambda n: [f"+{n}"], id="with-a-sign"),
    ],
)
def test_a_file_cut_short_resumes_however_its_length_is_written(tmp_path, lengths):
    """Content-Length as HTTP readers take it though it is not plain digits (twice, as
    some proxies send it; with a sign): a body cut short is a broken transfer, resumed,
    not a whole file that fails its SHA-256 and is thrown away."""

    class Cutting(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        log_message = Handler.log_message

        def do_GET(self) -> None:
            asked = self.headers.get("Range", "bytes=0-")
            start = int(asked.removeprefix("bytes=").split("-")[0])
            body = DATA[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
            for value in lengths(len(body)):
                self.send_header("Content-Length", value)
            self.send_header("X-Checksum-Sha256", sha256(DATA))
            self.end_headers()
            if start:
                self.wfile.write(body)
            else:  # the first answer stops halfway
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Cutting)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/big.bin"
        result = courier("download", url, "-o", str(tmp_path), "--retries", "2")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.code == 0, result.output
    assert "resumed at" in result.stderr
    assert (tmp_path / "big.bin").read_bytes() == DATA


# Runs a command and prints its peak resident memory: from a process of its own, since a
# child's peak counts the memory of the process it was forked from (this one: large).
PEAK = """import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss * 1024)  # KiB on Linux"""


def peak_memory(*args: str) -> tuple[int, int]:
    """Runs `courier *args`: its exit code and its peak resident memory, in bytes."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL") if k in os.environ}
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(COURIER), *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    code, peak = map(int, out.split())
    return code, peak


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss in KiB: Linux")
def test_many_small_files_of_unknown_size_do_not_each_cost_the_whole_buffer_pool(tmp_path):
    """A listing may give no sizes: each file then goes the way of a large one, received
    into buffers of 1 MiB. A small file costs the one it needs, not the pool's six (new
    ones are zeroed: resident, however few bytes the file has)."""
    small = os.urandom(1000)
    routes = {("GET", "/f"): file_route(small)}
    with stub_server(routes) as (base, _):
        items = [
            {"path": f"f{i}.bin", "sha256": sha256(small), "url": f"{base}/f"} for i in range(200)
        ]
        routes[("GET", "/listing")] = lambda h: (200, {}, json_body({"artifacts": items}))
        code, alone = peak_memory(
            "download", f"{base}/listing", "-o", str(tmp_path / "a"), "-j", "1"
        )
        assert code == 0
        code, together = peak_memory(
            "download", f"{base}/listing", "-o", str(tmp_path / "b"), "-j", "32"
        )
        assert code == 0
    assert len(list((tmp_path / "b").iterdir())) == 200
    assert together - alone < 32 * 3 * MiB
