"""Uploads through a real gunicorn: what only a real HTTP server can show (chunked transfer
encoding, a client hanging up mid-body). One sync worker serves one request at a time, so once
a later request is answered, the earlier one has been fully handled."""

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .conftest import Store, free_port, stop, wait_for_port

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


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def server(request, tmp_path_factory):
    """gunicorn serving the app on its own SQLite database and storage, with one build."""
    data_dir = tmp_path_factory.mktemp("server")
    env = {**os.environ, "AC_DATA_DIR": str(data_dir), "STORAGE_BACKEND": request.param}
    env.pop("DATABASE_URL", None)
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

    def manage(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    manage("migrate", "--noinput")
    project_token = manage("create_project", "e2e").strip().splitlines()[-1]
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "artifactcourier.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "60",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "POST",
            "/api/v1/projects/e2e/builds/",
            body=json.dumps({"ref": "refs/heads/main"}),
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
    assert json.loads(listing)["count"] == 0
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
