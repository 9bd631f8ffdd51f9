"""Slow, idle and stalled clients against a real gunicorn started with the repository's
configuration (gunicorn.conf.py, as `make run` and the compose stack start it)."""

import hashlib
import http.client
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest

from .conftest import Store
from .test_streaming_server import server_env, serving

pytestmark = pytest.mark.slow

# What a client waits for an answer before the test calls the server stuck. Generous for a
# loaded machine; a server blocked by the clients below would not answer for minutes.
PATIENCE = 15


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The configuration's defaults: what `make run` serves (two processes)."""
    data_dir = tmp_path_factory.mktemp("embedded")
    store = Store("filesystem", root=data_dir / "artifacts")
    with serving(data_dir, server_env(data_dir, "filesystem"), store, "--workers", "2") as server:
        yield server


def auth(server) -> dict:
    return {"Authorization": f"Bearer {server.token}"}


def half_sent(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head)
    return sock


def test_a_dozen_half_sent_requests_do_not_hold_up_anyone_else(embedded):
    with ExitStack() as stack:
        for _ in range(12):
            sock = half_sent(embedded.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            stack.callback(sock.close)
        conn = http.client.HTTPConnection("127.0.0.1", embedded.port, timeout=PATIENCE)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
        data = os.urandom(1000)
        response, body = embedded.request("PUT", embedded.artifact("while-slow.bin"), body=data)
        assert response.status == 201, body


def test_concurrent_uploads_and_reads_on_one_sqlite_database_all_succeed(embedded):
    """The threads of both processes write and read the embedded SQLite database at once."""

    def upload(i: int):
        data = os.urandom(50_000 + i)
        response, body = embedded.request("PUT", embedded.artifact(f"many/{i}.bin"), body=data)
        listing_response, _ = embedded.request("GET", embedded.artifact() + "?prefix=many/")
        return response.status, listing_response.status, body

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(upload, range(32)))
    assert [r[:2] for r in results] == [(201, 200)] * 32, [r for r in results if r[0] != 201]
    _, listing = embedded.request("GET", embedded.artifact() + "?prefix=many/&page_size=100")
    assert json.loads(listing)["count"] == 32


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """One process of 4 threads, a 3 s heartbeat timeout, 3 s for a request head and a 2 s
    upload idle timeout."""
    data_dir = tmp_path_factory.mktemp("small")
    env = {
        **server_env(data_dir, "filesystem"),
        "ARTIFACT_UPLOAD_IDLE_TIMEOUT": "2",
        "GUNICORN_THREADS": "4",
        "GUNICORN_HEAD_TIMEOUT": "3",
    }
    store = Store("filesystem", root=data_dir / "artifacts")
    with serving(data_dir, env, store, "--timeout", "3") as server:
        yield server


def test_a_slow_upload_taking_longer_than_the_worker_timeout_completes(small):
    """8 s of trickling (a piece every 0.4 s) against a 3 s worker timeout."""
    pieces = [os.urandom(10_000) for _ in range(20)]

    def trickle():
        for piece in pieces:
            time.sleep(0.4)
            yield piece

    data = b"".join(pieces)
    sha = hashlib.sha256(data).hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=60)
    conn.putrequest("PUT", small.artifact("slow.bin"))
    conn.putheader("Authorization", f"Bearer {small.token}")
    conn.putheader("Content-Length", str(len(data)))
    conn.putheader("X-Checksum-Sha256", sha)
    conn.endheaders()
    for piece in trickle():
        conn.send(piece)
    response = conn.getresponse()
    assert response.status == 201, response.read()
    assert json.loads(response.read())["sha256"] == sha
    conn.close()
    response, downloaded = small.request("GET", small.artifact("slow.bin"))
    assert downloaded == data


def test_a_slow_download_taking_longer_than_the_worker_timeout_completes(small):
    """16 MiB read at about 2.5 MB/s (several seconds) against a 3 s worker timeout: more than
    the socket buffers hold, so the server is still writing when the timeout would strike."""
    data = os.urandom(16 * 1024 * 1024)
    response, body = small.request("PUT", small.artifact("big-slow.bin"), body=data)
    assert response.status == 201, body
    conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=60)
    conn.request("GET", small.artifact("big-slow.bin"), headers=auth(small))
    response = conn.getresponse()
    assert response.status == 200
    received = bytearray()
    while piece := response.read(256 * 1024):
        received += piece
        time.sleep(0.1)
    conn.close()
    assert len(received) == int(response.getheader("Content-Length")) == len(data)
    assert received == data


def _stalled_upload(server, path: str, chunked: bool) -> socket.socket:
    framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 1000000"
    head = (
        f"PUT {server.artifact(path)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.token}\r\n{framing}\r\n\r\n"
    ).encode()
    return half_sent(server.port, head + (b"3\r\nabc\r\n" if chunked else b"abc"))


def _response(sock: socket.socket) -> bytes:
    sock.settimeout(PATIENCE * 2)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_stalled_uploads_are_cut_with_408_and_leave_nothing_behind(small):
    """Twice as many stalled uploads as threads (both body framings): each is answered 408 once
    it has sent nothing for the idle timeout, nothing is stored, and the server serves on."""
    before = small.store.objects()
    with ExitStack() as stack:
        socks = []
        for i in range(8):
            sock = _stalled_upload(small, f"stalled/{i}.bin", chunked=bool(i % 2))
            stack.callback(sock.close)
            socks.append(sock)
        for sock in socks:
            answer = _response(sock)  # the server closes the connection after answering
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"code":"body_stalled"' in answer
    response, _ = small.request("GET", small.artifact("stalled/0.bin"))
    assert response.status == 404
    _, listing = small.request("GET", small.artifact() + "?prefix=stalled/")
    assert json.loads(listing)["count"] == 0
    assert small.store.objects() == before


def test_a_request_head_never_finished_is_closed_and_frees_its_thread(small):
    """More half-sent heads than threads: each connection is closed unanswered once the head
    deadline passes, and the server answers others meanwhile and after."""
    with ExitStack() as stack:
        socks = []
        for _ in range(6):
            sock = half_sent(small.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            stack.callback(sock.close)
            socks.append(sock)
        for sock in socks:
            assert _response(sock) == b""  # closed without an answer
    conn = http.client.HTTPConnection("127.0.0.1", small.port, timeout=PATIENCE)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200


def test_a_request_head_sent_slowly_but_whole_in_time_is_answered(small):
    sock = half_sent(small.port, b"GET /healthz HTTP/1.1\r\n")
    with sock:
        for part in (b"Host: 127.0.0.1\r\n", b"Connection: close\r\n", b"\r\n"):
            time.sleep(0.3)
            sock.sendall(part)
        assert _response(sock).startswith(b"HTTP/1.1 200")
