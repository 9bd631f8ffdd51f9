"""Batch uploads to S3: small members are written by several threads at once. Every file
arrives, a store failing midway is a 503 that leaves nothing in the bucket, and no write is
still running when the batch answers."""

import os
import threading
import time

import pytest

from artifacts import batch
from artifacts.models import Artifact

from .conftest import download, sha256
from .test_batch_upload import files, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def s3_store(faulty_s3, settings):
    """The bucket behind the FaultyS3 proxy (``store.proxy``); every call goes to the store."""
    settings.AWS_S3_BREAKER_FAILURES = 0
    faulty_s3.store.proxy = faulty_s3
    return faulty_s3.store


def puts(store) -> list[str]:
    return [path for method, path in store.proxy.calls if method == "PUT"]


def test_many_small_files_arrive_whole_each_in_one_request(api, build, s3_store, monkeypatch):
    monkeypatch.setattr(batch, "_ROWS_PER_STATEMENT", 7)  # several groups in flight in turn
    pairs = [(f"dir/f{i:02}.bin", os.urandom(1000 + i)) for i in range(40)]
    pairs += [("dir/same-1", b"same"), ("dir/same-2", b"same")]

    response = post(api, build, files(*pairs))

    assert response.status_code == 201, response.content
    listed = {a["path"]: a["sha256"] for a in response.json()["artifacts"]}
    assert listed == {path: sha256(data) for path, data in pairs}
    assert len(s3_store.objects()) == 41  # the same bytes twice are one object
    assert len(puts(s3_store)) == 41  # one PutObject each, no multipart upload
    assert s3_store.pending_uploads() == []
    for path, data in pairs:
        assert download(api, build.token, build.build.pk, path).body == data


def test_a_store_failing_midway_is_a_503_and_leaves_nothing_in_the_bucket(
    api, build, s3_store, monkeypatch
):
    monkeypatch.setattr(batch, "_ROWS_PER_STATEMENT", 5)
    paths: list[str] = []
    lock = threading.Lock()

    def slow_eleventh_failing_twelfth(method: str, path: str):
        """The 11th object is slow (within the client's 1 s read timeout); every attempt at
        the 12th is dropped (the client retries)."""
        if method != "PUT":
            return None
        with lock:
            if path not in paths:
                paths.append(path)
            n = paths.index(path) + 1
        return {11: 0.3, 12: "drop"}.get(n)

    s3_store.proxy.rule = slow_eleventh_failing_twelfth
    pairs = [(f"f{i:02}", os.urandom(500)) for i in range(30)]

    response = post(api, build, files(*pairs))

    assert response.status_code == 503, response.content
    assert response.json()["code"] == "unavailable"
    s3_store.proxy.rule = lambda method, path: None
    assert not Artifact.objects.filter(build=build.build).exists()
    assert s3_store.objects() == []  # every object written before the failure was deleted
    time.sleep(0.8)  # a write still running after the answer would show up now
    assert s3_store.objects() == []


def test_a_body_checksum_mismatch_after_objects_were_written_leaves_nothing(
    api, build, s3_store, monkeypatch
):
    monkeypatch.setattr(batch, "_ROWS_PER_STATEMENT", 4)
    # Slow writes: a group is still being written when the mismatch is found.
    s3_store.proxy.rule = lambda method, path: 0.3 if method == "PUT" else None
    body = files(*[(f"f{i}", os.urandom(300)) for i in range(20)])

    response = post(api, build, body, headers={"X-Checksum-Sha256": "0" * 64})

    assert response.status_code == 400, response.content
    assert len(puts(s3_store)) >= 4  # groups had been written while the archive was read
    assert s3_store.objects() == []
    time.sleep(0.6)
    assert s3_store.objects() == []
    assert not Artifact.objects.filter(build=build.build).exists()


@pytest.fixture
def two_writers(settings, monkeypatch):
    """A pool of two writer threads of the test's own."""
    settings.ARTIFACT_BATCH_S3_WRITERS = 2
    monkeypatch.setattr(batch, "_writer_pool", None)
    yield
    if batch._writer_pool is not None:
        batch._writer_pool[1].shutdown(wait=True)


def small_member(data: bytes, path: str) -> batch.StoredMember:
    return batch.StoredMember(path, len(data), sha256(data), None)


def test_a_large_group_does_not_make_another_batchs_writes_wait_behind_it(
    build, s3_store, two_writers
):
    # Every PutObject takes 50 ms: the first batch's group of 100 is 2.5 s of the pool's time.
    s3_store.proxy.rule = lambda method, path: 0.05 if method == "PUT" else None
    first = batch._SmallMembers(project_id=build.build.project_id)
    second = batch._SmallMembers(project_id=build.build.project_id)
    for i in range(100):
        data = os.urandom(100)
        first.add(small_member(data, f"a{i}"), data)
    first.flush()
    data = os.urandom(100)
    alone = small_member(data, "b")
    second.add(alone, data)
    second.flush()
    second.wait()
    first.wait()

    # The second batch's write went in among the first batch's writes already running, not
    # after all of them: most of the first group was written after it.
    order = puts(s3_store)
    assert len(order) == 101 and len(s3_store.objects()) == 101
    (position,) = [i for i, path in enumerate(order) if path.endswith("/" + alone.name)]
    assert position < 50, f"the second batch's write was PUT number {position + 1} of 101"


def test_a_failed_batch_does_not_write_the_rest_of_its_group(build, s3_store, two_writers):
    s3_store.proxy.rule = lambda method, path: 0.05 if method == "PUT" else None
    members = []
    small = batch._SmallMembers(project_id=build.build.project_id)
    with pytest.raises(ZeroDivisionError), small:
        for i in range(100):
            data = os.urandom(100)
            members.append(small_member(data, f"f{i}"))
            small.add(members[-1], data)
        small.flush()
        1 / 0  # noqa: B018 (the batch fails while its group is being written)
    written_when_it_failed = len(puts(s3_store))
    batch._writer_pool[1].shutdown(wait=True)  # whatever the pool still held has run

    # Only the writes already running when the batch failed were made, not the 100.
    assert written_when_it_failed <= 4
    assert len(puts(s3_store)) == written_when_it_failed
    # Every object written is named on its member, for the caller to delete.
    written = [m.name for m in members if m.name]
    assert sorted(written) == s3_store.objects()
