"""Uploads racing each other, each on its own database connection (one thread per request).

SQLite runs one writing transaction at a time (the app opens them IMMEDIATE), so there the
second upload waits for the first to commit and the race cannot happen: these tests need
PostgreSQL, where CI runs them."""

import os
import threading

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
    both have looked for a blob of these bytes and found none."""
    both_there = threading.Barrier(2, timeout=30)
    commit = storage.FileSystemBlobWriter.commit

    def commit_with_the_other(self, *, sha256: str) -> str:
        both_there.wait()
        return commit(self, sha256=sha256)

    monkeypatch.setattr(storage.FileSystemBlobWriter, "commit", commit_with_the_other)


def test_the_same_new_bytes_uploaded_to_two_builds_at_once_both_succeed_and_are_stored_once(
    api, build, other_build, settings, both_publish_together
):
    data = os.urandom(100_000)
    responses = put_concurrently(
        api,
        [
            (build.token, build.build.pk, "dist/app.bin", data),
            (other_build.token, other_build.build.pk, "app.bin", data),
        ],
    )
    assert [r.status_code for r in responses] == [201, 201]
    assert [r.json()["sha256"] for r in responses] == [sha256(data)] * 2
    assert download(api, build.token, build.build.pk, "dist/app.bin").body == data
    assert download(api, other_build.token, other_build.build.pk, "app.bin").body == data
    assert Blob.objects.count() == 1
    stored = Store("filesystem", root=settings.ARTIFACT_ROOT).objects()
    assert stored == [Blob.objects.get().storage_name]
