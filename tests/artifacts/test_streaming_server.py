"""Uploads through a real gunicorn: what only a real HTTP server can show (chunked transfer
encoding, a client hanging up mid-body). One worker thread serves one request at a time, so
once a later request is answered, the earlier one has been fully handled."""

import hashlib
import http.client
import json
import os
import resource
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools.servers import manage as run_manage
from devtools.servers import start_gunicorn, stop

from .conftest import Store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


class Server:
    def __init__(self, port: int, token: str, build_id: int, store: Store) -> None:
        self.port, self.token, self.build_id, self.store = port, token, build_id, store

    def request(self, method: str, path: str, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        conn.request(
            method,
            path,
            body=body,
            headers=headers,
            encode_chunked=body is not None and not isinstance(body, bytes),
        )
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response, data

    def artifact(self, path: str = "") -> str:
        return f"/api/v1/builds/{self.build_id}/artifacts/{path}"


@contextmanager
def serving(data_dir: Path, env: dict, store: Store, *gunicorn_options: str, preexec_fn=None):
    """gunicorn serving the app from ``data_dir`` (its SQLite database) with one build."""

    def manage(*args: str) -> str:
        return run_manage(env, *args)

    manage("migrate", "--noinput")
    project_token = manage("create_project", "e2e").strip().splitlines()[-1]
    proc, port = start_gunicorn(env, "--timeout", "60", *gunicorn_options, preexec_fn=preexec_fn)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "POST",
            "/api/v1/projects/e2e/builds/",
            body=json.dumps({"ref": "refs/heads/main", "commit": "abc"}),
            headers={
                "Authorization": f"Bearer {project_token}",
                "Content-Type": "application/json",
            },
        )
        build = json.loads(conn.getresponse().read())
        conn.close()
        yield Server(port, build["key"]["token"], build["id"], store)
    finally:
        stop(proc)


def server_env(data_dir: Path, storage: str) -> dict:
    env = {**os.environ, "AC_DATA_DIR": str(data_dir), "STORAGE_BACKEND": storage}
    env.pop("DATABASE_URL", None)
    return env


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def server(request, tmp_path_factory):
    """gunicorn (one process, one thread) on its own SQLite database and storage, with one
    build."""
    data_dir = tmp_path_factory.mktemp("server")
    env = server_env(data_dir, request.param)
    if request.param == "s3":
        store = Store(
            "s3",
            endpoint=request.getfixturevalue("s3_server"),
            bucket=f"e2e-{uuid.uuid4().hex[:12]}",
        )
        store.client().create_bucket(Bucket=store.bucket)
        env.update(
            AWS_STORAGE_BUCKET_NAME=store.bucket,
            AWS_S3_ENDPOINT_URL=store.endpoint,
            AWS_S3_REGION_NAME="us-east-1",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )
    else:
        store = Store("filesystem", root=data_dir / "artifacts")
    with serving(data_dir, env, store, "--threads", "1") as server:
        yield server


def test_chunked_upload_round_trips(server):
    chunks = [os.urandom(MiB + 17) for _ in range(5)]
    data = b"".join(chunks)
    response, body = server.request("PUT", server.artifact("chunked.bin"), body=iter(chunks))
    assert response.status == 201, body
    assert json.loads(body)["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads(body)["size"] == len(data)
    response, downloaded = server.request("GET", server.artifact("chunked.bin"))
    assert response.status == 200
    assert downloaded == data


def test_client_hanging_up_mid_body_leaves_nothing(server):
    before = server.store.objects()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"PUT {server.artifact('cut.bin')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.token}\r\nContent-Length: {64 * MiB}\r\n\r\n".encode()
        )
        sock.sendall(os.urandom(20 * MiB))
    response, _ = server.request("GET", server.artifact("cut.bin"))
    assert response.status == 404
    _, listing = server.request("GET", server.artifact() + "?prefix=cut")
    assert json.loads(listing)["results"] == []
    assert server.store.objects() == before
    assert server.store.pending_uploads() == []


@pytest.mark.parametrize("size", [0, 100, 9 * MiB + 123])
def test_upload_with_content_length_round_trips(server, size):
    """The direct-from-socket read path: bodies in the header packet, and over several chunks."""
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    response, body = server.request(
        "PUT", server.artifact(f"sized-{size}.bin"), body=data, headers={"X-Checksum-Sha256": sha}
    )
    assert response.status == 201, body
    assert json.loads(body)["sha256"] == sha
    response, downloaded = server.request("GET", server.artifact(f"sized-{size}.bin"))
    assert downloaded == data


def test_body_and_the_next_request_in_one_packet_are_both_answered(server):
    """Bytes of a pipelined request that arrive with the body are not swallowed as body."""
    body = b"pipelined body"
    put = (
        f"PUT {server.artifact('pipelined.txt')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.token}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    get = (
        f"GET {server.artifact('pipelined.txt')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.token}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(put + get)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 201")
    _, downloaded = server.request("GET", server.artifact("pipelined.txt"))
    assert downloaded == body


FILE_SIZE_LIMIT = MiB


def _limit_file_size() -> None:
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG (like a full disk).
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


@pytest.fixture(scope="module")
def keepalive_server(tmp_path_factory):
    """gunicorn with a threaded worker, which keeps connections alive (as behind a proxy that
    reuses its upstream connections), reading bodies 16 KiB at a time, whose files cannot grow
    past 1 MiB: an upload stops a few KiB past that, with the rest of its body unread."""
    data_dir = tmp_path_factory.mktemp("keepalive")
    env = {**server_env(data_dir, "filesystem"), "ARTIFACT_UPLOAD_CHUNK_SIZE": str(16 * 1024)}
    store = Store("filesystem", root=data_dir / "artifacts")
    options = ("--worker-class", "gthread", "--threads", "2")
    with serving(data_dir, env, store, *options, preexec_fn=_limit_file_size) as server:
        yield server


def test_after_an_upload_fails_mid_body_the_same_connection_serves_the_next_request(
    keepalive_server,
):
    """The unread rest of the failed upload's body is drained, never parsed as a request."""
    server = keepalive_server
    auth = {"Authorization": f"Bearer {server.token}"}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    # What is left unread stays under 64 KiB, which gunicorn drains (more, it would close).
    body = os.urandom(FILE_SIZE_LIMIT + 48 * 1024)
    conn.request("PUT", server.artifact("too-big.bin"), body=body, headers=auth)
    failed = conn.getresponse()
    failed.read()
    sock = conn.sock
    assert failed.status == 507  # the file-size limit reads as a full store

    conn.request("PUT", server.artifact("small.txt"), body=b"small", headers=auth)
    stored = conn.getresponse()
    assert stored.status == 201, stored.read()
    stored.read()
    conn.request("GET", server.artifact("small.txt"), headers=auth)
    downloaded = conn.getresponse()
    assert (downloaded.status, downloaded.read()) == (200, b"small")
    assert conn.sock is sock  # one connection throughout
    conn.close()


def test_the_longest_path_a_url_may_carry_goes_up_and_comes_back_through_gunicorn(server):
    """The path limit in URL bytes (3000) fits gunicorn's request line with room to spare,
    for the API and for a signed link to the same file."""
    from urllib.parse import quote, urlsplit

    path = "long/" + "/".join(["字" * 83] * 4)  # 2996 bytes once encoded
    assert len(quote(path, safe="/")) <= 3000
    url = server.artifact(quote(path, safe="/"))
    response, _ = server.request("PUT", url, b"far", {"Content-Type": "application/octet-stream"})
    assert response.status == 201
    response, data = server.request("GET", url)
    assert (response.status, data) == (200, b"far")
    response, body = server.request(
        "POST",
        f"/api/v1/builds/{server.build_id}/share",
        json.dumps({"paths": [path]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert response.status == 201, body
    (item,) = json.loads(body)["artifacts"]
    link = urlsplit(item["url"])
    response, data = server.request("GET", f"{link.path}?{link.query}", headers={})
    assert (response.status, data) == (200, b"far")
