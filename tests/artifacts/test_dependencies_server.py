"""The deployment shape under a slow or failing dependency, with real processes: gunicorn
(threaded worker) on the test's database, moto's S3 server behind a fault-injecting proxy.

On PostgreSQL gunicorn serves the test database itself (the test commits its rows); on SQLite,
which pytest keeps in memory, it gets a database of its own in a temporary directory."""

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connection

from devtools.faults import FaultyS3, is_object_completion
from devtools.servers import manage, start_gunicorn, stop

from .conftest import Store

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


class Live:
    """gunicorn serving the app; requests with a bounded wait (a hang fails the test)."""

    def __init__(self, env: dict, data_dir: Path, project_token: str, store: Store) -> None:
        self.env, self.data_dir, self.project_token, self.store = (
            env,
            data_dir,
            project_token,
            store,
        )
        self.proc = None
        self.port = 0

    def start(self) -> None:
        # Own session: a test can kill the master and its workers at once, as a crash would.
        self.proc, self.port = start_gunicorn(
            self.env,
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--timeout",
            "120",
            preexec_fn=os.setsid,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop(self.proc)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def request(self, method: str, path: str, token: str, body=None, timeout: float = 20):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Authorization": f"Bearer {token}"}
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        return response.status, (json.loads(data) if data.startswith(b"{") else data)

    def build_create(self, timeout: float = 20) -> dict:
        status, body = self.request(
            "POST",
            "/api/v1/projects/live/builds/",
            self.project_token,
            {"ref": "refs/heads/main", "commit": "c" * 40, "trusted": True},
            timeout=timeout,
        )
        assert status == 201, body
        return body

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)

    def artifact_count(self) -> int:
        if connection.vendor == "postgresql":
            from artifacts.models import Artifact

            return Artifact.objects.count()
        with sqlite3.connect(self.data_dir / "db.sqlite3") as db:
            return db.execute("SELECT count(*) FROM artifacts_artifact").fetchone()[0]


def _database_env(env: dict, data_dir: Path) -> str:
    """Point ``env`` at a database gunicorn can share with the test; return a project token."""
    if connection.vendor == "postgresql":
        from devtools.factories import make_project, make_project_key

        s = connection.settings_dict
        env["DATABASE_URL"] = (
            f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
        )
        return make_project_key(make_project(slug="live"))
    env.pop("DATABASE_URL", None)
    run = {"cwd": ROOT, "env": env, "check": True, "capture_output": True, "text": True}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], **run)
    out = subprocess.run([sys.executable, "manage.py", "create_project", "live"], **run).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture
def live_env(request, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {
        **os.environ,
        "AC_DATA_DIR": str(data_dir),
        "ARTIFACT_S3_PART_SIZE": str(5 * MiB),
        "TRIPWIRE_WRITE_DENIALS": "2",
        "AWS_S3_CONNECT_TIMEOUT": "2",
        "AWS_S3_READ_TIMEOUT": "5",
        "AWS_S3_MAX_ATTEMPTS": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    env.pop("REDIS_URL", None)
    return env, data_dir


@pytest.fixture
def live_s3(request, live_env, s3_server):
    """gunicorn storing in S3 through a FaultyS3 proxy (``live.proxy``)."""
    env, data_dir = live_env
    store = Store("s3", endpoint=s3_server, bucket=f"live-{uuid.uuid4().hex[:12]}")
    store.client().create_bucket(Bucket=store.bucket)
    with FaultyS3(s3_server, max_wait=30) as proxy:
        env.update(
            STORAGE_BACKEND="s3",
            AWS_STORAGE_BUCKET_NAME=store.bucket,
            AWS_S3_ENDPOINT_URL=proxy.url,
            AWS_S3_REGION_NAME="us-east-1",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
        )
        live = Live(env, data_dir, _database_env(env, data_dir), store)
        live.proxy = proxy
        live.start()
        try:
            yield live
        finally:
            proxy.release()
            live.stop()


@pytest.fixture
def live_fs(request, live_env):
    env, data_dir = live_env
    env["STORAGE_BACKEND"] = "filesystem"
    store = Store("filesystem", root=data_dir / "artifacts")
    live = Live(env, data_dir, _database_env(env, data_dir), store)
    live.start()
    try:
        yield live
    finally:
        live.stop()


def artifact_path(build_id: int, path: str) -> str:
    return f"/api/v1/builds/{build_id}/artifacts/{path}"


def in_thread(target, *args) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        try:
            result["value"] = target(*args)
        except Exception as exc:  # reported by the test that joins
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def hold_first(predicate):
    """A proxy rule holding the first call ``predicate`` picks; the others pass."""
    taken = threading.Lock()

    def rule(method: str, path: str):
        if predicate(method, path) and taken.acquire(blocking=False):
            return "hold"
        return None

    return rule


# --- 1. No lock held across a network call ---------------------------------------------------


def test_while_s3_completes_an_upload_the_project_keeps_being_served(live_s3):
    """S3 takes its time assembling an upload: build creation and uploads to other builds of
    the same project must not wait for it (they would, were a row lock held across the call)."""
    first = live_s3.build_create()
    data = os.urandom(6 * MiB)
    live_s3.proxy.rule = hold_first(is_object_completion)
    thread, result = in_thread(
        live_s3.request,
        "PUT",
        artifact_path(first["id"], "dist/big.bin"),
        first["key"]["token"],
        data,
        60,
    )
    try:
        assert live_s3.proxy.held.wait(30), "the upload never reached its completing call"
        # S3 is still completing the first upload. A bounded wait: a blocked request fails here.
        second = live_s3.build_create(timeout=10)
        status, body = live_s3.request(
            "PUT",
            artifact_path(second["id"], "other.txt"),
            second["key"]["token"],
            b"other build, same project",
            timeout=10,
        )
        assert status == 201, body
    finally:
        live_s3.proxy.release()
        thread.join(60)
    assert result.get("value", (None,))[0] == 201, result
    status, body = live_s3.request(
        "GET", artifact_path(first["id"], "dist/big.bin"), first["key"]["token"]
    )
    assert status == 200 and body == data


# --- 3. A dropped database connection is reconnected ------------------------------------------


def test_a_small_artifact_is_one_request_to_s3_and_a_large_one_a_multipart_upload(live_s3):
    """Below ARTIFACT_S3_PART_SIZE (5 MiB here) an upload is one PutObject; above it, a
    multipart upload of parts of at least that size. Both read back whole."""
    build = live_s3.build_create()
    token = build["key"]["token"]
    small, large = os.urandom(100_000), os.urandom(11 * MiB)
    calls = live_s3.proxy.calls
    before = len(calls)
    assert live_s3.request("PUT", artifact_path(build["id"], "small.bin"), token, small)[0] == 201
    small_calls = [(m, p.split("?", 1)[-1] if "?" in p else "") for m, p in calls[before:]]
    assert small_calls == [("PUT", "")], small_calls  # PutObject, nothing else
    before = len(calls)
    assert live_s3.request("PUT", artifact_path(build["id"], "large.bin"), token, large)[0] == 201
    made = calls[before:]
    assert made[0][0] == "POST" and made[0][1].endswith("?uploads"), made  # create
    assert all(m == "PUT" and "partNumber=" in p for m, p in made[1:-1]) and len(made) >= 4, made
    assert made[-1][0] == "POST" and "uploadId=" in made[-1][1], made  # complete
    for path, data in [("small.bin", small), ("large.bin", large)]:
        status, body = live_s3.request("GET", artifact_path(build["id"], path), token)
        assert status == 200 and body == data


def test_database_connections_dropped_by_the_server_are_replaced_not_reported(live_fs):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (pg_terminate_backend)")
    build = live_fs.build_create()
    token = build["key"]["token"]
    # Every worker thread opens its persistent connection.
    for _ in range(8):
        assert live_fs.request("GET", "/api/v1/keys/self", token)[0] == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    statuses = [live_fs.request("GET", "/api/v1/keys/self", token)[0] for _ in range(20)]
    statuses += [
        live_fs.request("PUT", artifact_path(build["id"], f"f{i}.txt"), token, b"x")[0]
        for i in range(10)
    ]
    statuses += [live_fs.build_create() and 201 for _ in range(10)]
    assert set(statuses) <= {200, 201}, statuses


def test_signed_links_survive_database_connections_dropped_by_the_server(live_fs):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (pg_terminate_backend)")
    build = live_fs.build_create()
    token = build["key"]["token"]
    assert live_fs.request("PUT", artifact_path(build["id"], "one.bin"), token, b"x")[0] == 201
    status, shared = live_fs.request(
        "POST", f"/api/v1/builds/{build['id']}/share", token, {"expires_in": 600}
    )
    assert status == 201, shared
    parts = urlsplit(shared["artifacts"][0]["url"])
    link = f"{parts.path}?{parts.query}"
    # Every worker thread opens its persistent connection; the link lookup is a prepared
    # statement on it.
    for _ in range(8):
        assert live_fs.request("GET", link, "")[0] == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    answers = [live_fs.request("GET", link, "") for _ in range(12)]
    assert {status for status, _ in answers} == {200}, answers
    assert {body for _, body in answers} == {b"x"}


# --- 4. Revocation stops an upload in flight -----------------------------------------------


def _revoke_direct(live, build, derived) -> None:
    status, _ = live.request("DELETE", f"/api/v1/keys/{derived['id']}", derived["token"])
    assert status == 204


def _revoke_parent(live, build, derived) -> None:
    token = build["key"]["token"]
    status, me = live.request("GET", "/api/v1/keys/self", token)
    assert status == 200
    assert live.request("DELETE", f"/api/v1/keys/{me['id']}", token)[0] == 204


def _revoke_by_tripwire(live, build, derived) -> None:
    # Asking for a write scope the key lacks, as often as the tripwire tolerates (2 here).
    for _ in range(2):
        status, _ = live.request(
            "POST", "/api/v1/keys/", derived["token"], {"scopes": ["artifacts:read"]}
        )
        assert status == 403
    assert live.request("GET", "/api/v1/keys/self", derived["token"])[0] == 401


@pytest.mark.parametrize(
    "revoke", [_revoke_direct, _revoke_parent, _revoke_by_tripwire], ids=lambda f: f.__name__
)
def test_a_key_revoked_during_its_upload_stores_nothing(live_fs, revoke):
    build = live_fs.build_create()
    status, derived = live_fs.request(
        "POST",
        "/api/v1/keys/",
        build["key"]["token"],
        {"scopes": ["artifacts:write", "artifacts:read"], "path_prefix": "dist/"},
    )
    assert status == 201, derived
    body = os.urandom(30 * MiB)
    half = len(body) // 2
    with socket.create_connection(("127.0.0.1", live_fs.port), timeout=60) as sock:
        sock.sendall(
            f"PUT {artifact_path(build['id'], 'dist/late.bin')} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {derived['token']}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        sock.sendall(body[:half])
        revoke(live_fs, build, derived)
        sock.sendall(body[half:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), response[:300]
    assert json.loads(payload)["code"] == "revoked"
    assert live_fs.artifact_count() == 0
    # The staged bytes were discarded too.
    assert [p for p in live_fs.store.objects() if not p.startswith("incoming")] == []


# --- 5. Reconciliation removes what crashes leave in the bucket ------------------------------


def test_what_a_killed_server_leaves_in_the_bucket_is_removed_by_the_retention_task(live_s3):
    build = live_s3.build_create()
    token = build["key"]["token"]
    kept = os.urandom(100_000)
    assert live_s3.request("PUT", artifact_path(build["id"], "kept.bin"), token, kept)[0] == 201
    kept_objects = live_s3.store.objects()

    # One upload is killed while S3 completes it (the object appears, no row ever names it),
    # another mid-body (its multipart upload stays open).
    live_s3.proxy.rule = hold_first(is_object_completion)
    thread, _ = in_thread(
        live_s3.request, "PUT", artifact_path(build["id"], "a.bin"), token, os.urandom(MiB), 60
    )
    assert live_s3.proxy.held.wait(30)
    sock = socket.create_connection(("127.0.0.1", live_s3.port), timeout=30)
    sock.sendall(
        f"PUT {artifact_path(build['id'], 'b.bin')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {40 * MiB}\r\n\r\n".encode()
    )
    sock.sendall(os.urandom(12 * MiB))  # two 5 MiB parts uploaded
    for _ in range(100):
        if live_s3.store.pending_uploads() and len(live_s3.proxy.calls) >= 4:
            break
        threading.Event().wait(0.1)
    live_s3.kill()
    sock.close()
    live_s3.proxy.release()  # S3 completes the first upload for a process that is gone
    thread.join(60)
    assert len(live_s3.store.objects()) > len(kept_objects)
    assert live_s3.store.pending_uploads()

    live_s3.env["ARTIFACT_ORPHAN_GRACE_SECONDS"] = "0"
    out = live_s3.manage("purge_artifacts")
    assert "aborted 1 incomplete upload(s), deleted 1 orphan object(s)" in out, out
    assert live_s3.store.objects() == kept_objects
    assert live_s3.store.pending_uploads() == []
