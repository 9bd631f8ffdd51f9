"""Uploads racing each other, each on its own database connection (one thread per request).

SQLite runs one writing transaction at a time (the app opens them IMMEDIATE), so there the
second upload waits for the first to commit and the race cannot happen: these tests need
PostgreSQL, where CI runs them."""

import os
import threading
import time

import pytest
from django.db import connection, connections

from artifacts import storage
from artifacts.models import Blob

from .conftest import Store, artifact_url, download, sha256

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor == "sqlite", reason="SQLite serializes writing transactions"
    ),
]


def put_concurrently(api, uploads: list[tuple[str, int, str, bytes]]) -> list:
    """PUT each ``(token, build id, path, body)`` from its own thread; the responses in order."""
    responses = [None] * len(uploads)

    def put(index: int, token: str, build_id: int, path: str, data: bytes) -> None:
        client = api.as_key(token)
        client.raise_request_exception = False  # a crash is a 500 the test must see
        try:
            responses[index] = client.generic(
                "PUT", artifact_url(build_id, path), data, content_type="application/octet-stream"
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=put, args=(i, *u)) for i, u in enumerate(uploads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


@pytest.fixture
def both_publish_together(monkeypatch):
    """Hold each upload just before it publishes new bytes until the other one is there too:
    both have looked for a blob of these bytes and found none. (Builds of one project take
    turns there, so the uploads must come from two projects.)"""
    both_there = threading.Barrier(2, timeout=30)
    commit = storage.FileSystemBlobWriter.commit

    def commit_with_the_other(self, *, sha256: str) -> str:
        both_there.wait()
        return commit(self, sha256=sha256)

    monkeypatch.setattr(storage.FileSystemBlobWriter, "commit", commit_with_the_other)


def test_the_same_new_bytes_uploaded_by_two_projects_at_once_both_succeed_and_are_stored_once(
    api, build, other_project_build, settings, both_publish_together
):
    data = os.urandom(100_000)
    responses = put_concurrently(
        api,
        [
            (build.token, build.build.pk, "dist/app.bin", data),
            (other_project_build.token, other_project_build.build.pk, "app.bin", data),
        ],
    )
    assert [r.status_code for r in responses] == [201, 201]
    assert [r.json()["sha256"] for r in responses] == [sha256(data)] * 2
    assert download(api, build.token, build.build.pk, "dist/app.bin").body == data
    assert (
        download(api, other_project_build.token, other_project_build.build.pk, "app.bin").body
        == data
    )
    assert Blob.objects.count() == 1
    stored = Store("filesystem", root=settings.ARTIFACT_ROOT).objects()
    assert stored == [Blob.objects.get().storage_name]


def waiting_on_a_lock() -> int:
    """How many other connections to this database wait for a lock held by a transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.fixture
def publishing_held(monkeypatch):
    """Hold uploads just before they publish new bytes (their quota is checked by then) until
    both are there, or one is there and the other waits for a database lock; then let go."""
    arrived = threading.Semaphore(0)
    go = threading.Event()
    commit = storage.FileSystemBlobWriter.commit

    def commit_when_let_go(self, *, sha256: str) -> str:
        arrived.release()
        go.wait(timeout=30)
        return commit(self, sha256=sha256)

    monkeypatch.setattr(storage.FileSystemBlobWriter, "commit", commit_when_let_go)

    def let_go_when_both_are_held_or_queued() -> None:
        try:
            deadline = time.monotonic() + 30
            if arrived.acquire(timeout=30):
                while time.monotonic() < deadline and not waiting_on_a_lock():
                    if arrived.acquire(timeout=0.05):
                        break
        finally:
            go.set()
            connections.close_all()

    return let_go_when_both_are_held_or_queued


def test_two_builds_uploading_at_once_cannot_together_exceed_the_project_quota(
    api, build, other_build, settings, publishing_held
):
    settings.PROJECT_ARTIFACTS_QUOTA = 1500
    referee = threading.Thread(target=publishing_held)
    referee.start()
    responses = put_concurrently(
        api,
        [
            (build.token, build.build.pk, "a.bin", os.urandom(1000)),
            (other_build.token, other_build.build.pk, "b.bin", os.urandom(1000)),
        ],
    )
    referee.join()
    assert sorted(r.status_code for r in responses) == [201, 413]
    rejected = next(r for r in responses if r.status_code == 413)
    assert "project" in rejected.json()["detail"]
    listed = [
        len(api.as_key(b.token).get(artifact_url(b.build.pk)).json()["results"])
        for b in (build, other_build)
    ]
    assert sum(listed) == 1


def test_two_batches_sharing_new_bytes_in_opposite_orders_both_succeed(
    api, build, other_project_build, settings, monkeypatch, tmp_path
):
    """Both batches record the same new digests at once, one listing them backwards: their
    rows' locks are taken in one order (digest order), so neither waits on the other in a
    cycle that PostgreSQL would break by failing one of them."""
    import io
    import tarfile

    from artifacts import batch

    store = Store("filesystem", root=tmp_path / "store")
    settings.STORAGES = {**settings.STORAGES, "default": store.storage_options()}
    datas = [os.urandom(64) for _ in range(1200)]  # three upsert statements each

    def body(order) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for i in order:
                info = tarfile.TarInfo(f"f{i:04}")
                info.size = len(datas[i])
                tar.addfile(info, io.BytesIO(datas[i]))
        return out.getvalue()

    both_there = threading.Barrier(2, timeout=30)
    link = batch._link

    def link_with_the_other(**kwargs):
        both_there.wait()
        return link(**kwargs)

    monkeypatch.setattr(batch, "_link", link_with_the_other)
    forward, backward = list(range(len(datas))), list(reversed(range(len(datas))))
    responses = [None, None]

    def post(index, created, order):
        client = api.as_key(created.token)
        client.raise_request_exception = False
        try:
            responses[index] = client.generic(
                "POST",
                f"/api/v1/builds/{created.build.pk}/artifacts/batch",
                body(order),
                content_type="application/x-tar",
            )
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=post, args=(0, build, forward)),
        threading.Thread(target=post, args=(1, other_project_build, backward)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in responses] == [201, 201], [r.content[:300] for r in responses]
    assert Blob.objects.count() == len(datas)
