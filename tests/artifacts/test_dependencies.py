"""A slow, unreachable or failing object store or database: other requests keep being
answered, a client gets a 503 with Retry-After (never a 500 or a hang), and nothing is left
half-done. The store is moto's S3 server behind a proxy on loopback that holds, drops or never
answers the calls a test picks (devtools/faults.py)."""

import os
import re
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from artifacts import services, storage
from artifacts.models import Artifact, Blob
from devtools.servers import free_port

from .conftest import Store, artifact_url, download, fast_failing_client, sha256, upload

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024
TIMESTAMP = re.compile(r"'\d{4}-\d\d-\d\d[ T][\d:.+]+'")


def assert_unavailable(response) -> None:
    assert response.status_code == 503, getattr(response, "content", b"")[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "unavailable"
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize("fault", ["blackhole", "drop"])
def test_a_store_that_never_answers_or_hangs_up_is_a_503_with_retry_after(
    api, build, faulty_s3, fault
):
    data = os.urandom(1000)
    assert upload(api, build.token, build.build.pk, "dist/kept.bin", data).status_code == 201
    faulty_s3.rule = lambda method, path: fault

    assert_unavailable(download(api, build.token, build.build.pk, "dist/kept.bin"))
    assert_unavailable(upload(api, build.token, build.build.pk, "dist/new.bin", b"new bytes"))

    faulty_s3.rule = lambda method, path: None
    assert download(api, build.token, build.build.pk, "dist/kept.bin").body == data
    listing = api.as_key(build.token).get(artifact_url(build.build.pk))
    assert [a["path"] for a in listing.json()["results"]] == ["dist/kept.bin"]
    assert faulty_s3.store.pending_uploads() == []


def test_after_repeated_failures_a_dead_store_is_not_called_until_the_breaker_cools_down(
    api, build, faulty_s3, settings
):
    settings.AWS_S3_BREAKER_FAILURES = 2
    settings.AWS_S3_BREAKER_SECONDS = 3600
    assert upload(api, build.token, build.build.pk, "kept.bin", b"kept").status_code == 201
    faulty_s3.rule = lambda method, path: "drop"
    for _ in range(2):
        assert_unavailable(download(api, build.token, build.build.pk, "kept.bin"))
    calls = len(faulty_s3.calls)
    # Open: answered at once, without holding a thread for the store's timeouts.
    assert_unavailable(download(api, build.token, build.build.pk, "kept.bin"))
    assert_unavailable(upload(api, build.token, build.build.pk, "new.bin", b"new"))
    assert len(faulty_s3.calls) == calls


def test_once_the_breaker_has_cooled_down_an_upload_probes_the_store_and_closes_it(
    api, build, faulty_s3, settings
):
    """Half-open: the first call after the cool-down goes to the store; an upload of a small
    file is that call (its one PutObject), and its success closes the breaker."""
    settings.AWS_S3_BREAKER_FAILURES = 2
    settings.AWS_S3_BREAKER_SECONDS = 1
    assert upload(api, build.token, build.build.pk, "kept.bin", b"kept").status_code == 201
    faulty_s3.rule = lambda method, path: "drop"
    for _ in range(2):
        assert_unavailable(download(api, build.token, build.build.pk, "kept.bin"))
    faulty_s3.rule = lambda method, path: None  # the store is back, the breaker does not know
    calls = len(faulty_s3.calls)
    assert_unavailable(upload(api, build.token, build.build.pk, "early.bin", b"early"))
    assert len(faulty_s3.calls) == calls  # refused before the body was stored anywhere
    time.sleep(1.1)
    assert upload(api, build.token, build.build.pk, "probe.bin", b"probe").status_code == 201
    assert len(faulty_s3.calls) == calls + 1
    assert download(api, build.token, build.build.pk, "kept.bin").body == b"kept"
    assert download(api, build.token, build.build.pk, "probe.bin").body == b"probe"


def test_a_store_refusing_connections_is_a_503_with_retry_after(api, build, settings, s3_server):
    bucket = f"refused-{os.urandom(6).hex()}"
    Store("s3", endpoint=s3_server, bucket=bucket).client().create_bucket(Bucket=bucket)
    working = Store("s3", endpoint=s3_server, bucket=bucket).storage_options()
    settings.STORAGES = {**settings.STORAGES, "default": working}
    assert upload(api, build.token, build.build.pk, "dist/kept.bin", b"kept").status_code == 201

    refused = Store("s3", endpoint=f"http://127.0.0.1:{free_port()}", bucket=bucket)
    options = refused.storage_options()
    options["OPTIONS"]["client_config"] = fast_failing_client()
    settings.STORAGES = {**settings.STORAGES, "default": options}
    assert_unavailable(download(api, build.token, build.build.pk, "dist/kept.bin"))
    assert_unavailable(upload(api, build.token, build.build.pk, "dist/new.bin", b"new"))


def test_the_settings_bound_every_s3_call():
    from django.conf import settings

    config = settings.AWS_S3_CLIENT_CONFIG
    assert config.connect_timeout <= 10 and config.read_timeout <= 60
    assert config.retries["max_attempts"] <= 5


# --- Publish, then link ---------------------------------------------------------------------


def test_a_blob_purged_between_publish_and_link_is_a_503_and_leaves_nothing(build, store, settings):
    """Publishing holds no lock, so retention (with no grace period) can remove the
    just-published blob before the upload links it: the upload answers 503 (retry), not a row
    pointing at deleted bytes."""
    settings.ARTIFACT_BLOB_GRACE_SECONDS = 0
    data = os.urandom(5000)
    writer = storage.blob_writer_open()
    writer.write(data)
    services.blob_publish(writer=writer, sha256=sha256(data), size=len(data))
    assert services.retention_purge(now=timezone.now() + timedelta(seconds=1)).blobs == 1
    with pytest.raises(services.BlobVanished):
        services.artifact_link(
            key=build.key,
            build=build.build,
            path="dist/raced.bin",
            sha256=sha256(data),
            content_type="application/octet-stream",
        )
    assert not Artifact.objects.filter(path="dist/raced.bin").exists()
    assert store.objects() == []


# --- Dedup is not an oracle -----------------------------------------------------------------


def test_another_projects_digest_is_neither_observable_nor_touched_before_verification(
    api, build, other_project_build, store
):
    secret = os.urandom(3000)
    theirs = upload(
        api, other_project_build.token, other_project_build.build.pk, "secret.bin", secret
    )
    assert theirs.status_code == 201
    Blob.objects.update(referenced_at=timezone.now() - timedelta(days=3))
    touched_before = Blob.objects.get(sha256=sha256(secret)).referenced_at
    nobodys = sha256(b"bytes nobody stores")

    def attempt(digest: str) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            response = upload(
                api,
                build.token,
                build.build.pk,
                "probe.bin",
                b"x",
                headers={"X-Checksum-Sha256": digest},
            )
        assert response.status_code == 400
        assert response.json()["code"] == "checksum_mismatch"
        return [
            TIMESTAMP.sub("<time>", q["sql"].replace(digest, "<digest>"))
            for q in queries.captured_queries
        ]

    attempt(nobodys)  # the key's first use records it (last_used_at): not part of the comparison
    # The same work, query for query, whether or not any project stores the digest: nothing
    # to time, and the other project's blob is not marked as referenced (its purge not delayed).
    assert attempt(sha256(secret)) == attempt(nobodys)
    assert Blob.objects.get(sha256=sha256(secret)).referenced_at == touched_before
    assert not Artifact.objects.filter(build=build.build).exists()


def test_uploading_bytes_another_project_stores_still_links_them_once_verified(
    api, build, other_project_build, store
):
    data = os.urandom(4000)
    upload(api, other_project_build.token, other_project_build.build.pk, "a.bin", data)
    response = upload(
        api,
        build.token,
        build.build.pk,
        "b.bin",
        data,
        headers={"X-Checksum-Sha256": sha256(data)},
    )
    assert response.status_code == 201
    assert download(api, build.token, build.build.pk, "b.bin").body == data
    assert Blob.objects.count() == 1
    assert len([name for name in store.objects() if name.startswith("blobs/")]) == 1
