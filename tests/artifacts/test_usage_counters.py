"""Quota usage kept as counters: what uploads add, what retention and deletes take away, what
concurrent uploads may take together, and the reconciliation that repairs a drifted counter."""

import os
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from artifacts import services, storage, tasks
from artifacts.models import Artifact
from builds.models import Build, Project
from devtools.factories import make_build, make_project

from .conftest import Store, artifact_url, upload
from .test_concurrent_uploads import put_concurrently


def usage(obj) -> tuple[int, int]:
    obj.refresh_from_db()
    return obj.used_bytes, obj.used_files


def build_totals(api, created) -> tuple[int, int]:
    body = api.as_key(created.token).get(f"/api/v1/builds/{created.build.pk}/").json()
    return body["total_size"], body["artifact_count"]


@pytest.mark.django_db
def test_uploads_count_against_build_and_project_and_show_on_the_build(
    api, project, build, other_build
):
    assert upload(api, build.token, build.build.pk, "a", b"x" * 100).status_code == 201
    assert upload(api, build.token, build.build.pk, "b", b"y" * 50).status_code == 201
    assert upload(api, build.token, build.build.pk, "a", b"x" * 100).status_code == 200
    assert upload(api, build.token, build.build.pk, "a", b"z" * 100).status_code == 409
    assert upload(api, other_build.token, other_build.build.pk, "a", b"x" * 100).status_code == 201

    assert build_totals(api, build) == (150, 2)
    assert build_totals(api, other_build) == (100, 1)
    assert usage(project) == (250, 3)


@pytest.mark.django_db
def test_file_count_quota_stops_empty_uploads_once_the_byte_quota_is_full(
    api, project, build, store, settings
):
    settings.BUILD_ARTIFACTS_QUOTA = 10
    settings.BUILD_ARTIFACTS_MAX_FILES = 3
    assert upload(api, build.token, build.build.pk, "full", b"0123456789").status_code == 201
    for path in ["empty-1", "empty-2"]:
        assert upload(api, build.token, build.build.pk, path, b"").status_code == 201

    response = upload(api, build.token, build.build.pk, "empty-3", b"")

    assert response.status_code == 413
    assert response.json() == {
        "detail": "A build may have at most 3 artifacts.",
        "code": "quota_exceeded",
    }
    assert Artifact.objects.filter(build=build.build).count() == 3
    assert usage(project) == (10, 3)
    # Re-sending a file the build holds is still answered (it adds nothing).
    assert upload(api, build.token, build.build.pk, "empty-1", b"").status_code == 200


@pytest.fixture
def retention(api):
    project = make_project(slug="kept-a-week", retention_days=7)
    old, new = make_build(project), make_build(project)
    for created, size in [(old, 300), (new, 200)]:
        for path in ["shared", "own"]:
            data = b"s" * 1000 if path == "shared" else os.urandom(size)
            assert upload(api, created.token, created.build.pk, path, data).status_code == 201
    Build.objects.filter(pk=old.build.pk).update(created_at=timezone.now() - timedelta(days=8))
    return project, old, new


@pytest.mark.django_db
def test_retention_takes_purged_artifacts_off_the_counters(api, retention):
    project, old, new = retention
    assert usage(project) == (2500, 4)

    result = services.retention_purge(now=timezone.now() + timedelta(days=2))

    assert result.artifacts == 2 and result.usage_drifts == []
    assert build_totals(api, old) == (0, 0)
    assert build_totals(api, new) == (1200, 2)
    assert usage(project) == (1200, 2)


@pytest.mark.django_db
def test_deleting_a_build_takes_its_artifacts_off_the_project(api, retention):
    project, old, _ = retention
    Build.objects.get(pk=old.build.pk).delete()  # as the admin does; artifacts cascade
    assert usage(project) == (1200, 2)
    assert services.retention_purge().usage_drifts == []


@pytest.mark.django_db
def test_deleting_a_project_with_builds_and_artifacts_works(api, retention):
    project, *_ = retention
    Project.objects.get(pk=project.pk).delete()
    assert not Artifact.objects.exists()


@pytest.mark.django_db
def test_reconciliation_repairs_and_reports_a_drifted_counter(api, retention, capsys):
    project, old, new = retention
    Build.objects.filter(pk=old.build.pk).update(created_at=timezone.now())  # nothing expires
    Build.objects.filter(pk=new.build.pk).update(used_bytes=7, used_files=70)
    Project.objects.filter(pk=project.pk).update(used_files=0)

    result = tasks.retention_purge()  # what the periodic task runs

    assert result["usage_drifts"] == [
        f"build {new.build.pk}: counted 7 bytes / 70 files, stored 1200 bytes / 2 files",
        f"project {project.pk}: counted 2500 bytes / 0 files, stored 2500 bytes / 4 files",
    ]
    assert build_totals(api, new) == (1200, 2)
    assert usage(project) == (2500, 4)
    # Repaired: the next run finds nothing, and the command says so too.
    call_command("purge_artifacts")
    assert "no usage drift" in capsys.readouterr().out


@pytest.fixture
def publishing_together(monkeypatch):
    """Hold every upload just before it publishes its bytes until ``n`` are there: all have
    passed the early quota check on the same counters."""
    holder = {}

    def arm(n: int) -> None:
        holder["barrier"] = threading.Barrier(n, timeout=30)

    commit = storage.FileSystemBlobWriter.commit

    def commit_together(self, *, sha256: str) -> str:
        holder["barrier"].wait()
        return commit(self, sha256=sha256)

    monkeypatch.setattr(storage.FileSystemBlobWriter, "commit", commit_together)
    return arm


@pytest.mark.parametrize("limit", ["bytes", "files"])
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite serializes writing transactions")
def test_concurrent_uploads_take_exactly_the_room_there_is(
    api, project, build, settings, publishing_together, limit
):
    if limit == "bytes":
        settings.BUILD_ARTIFACTS_QUOTA = 3500
    else:
        settings.BUILD_ARTIFACTS_MAX_FILES = 3
    publishing_together(6)
    bodies = [os.urandom(1000) for _ in range(6)]

    responses = put_concurrently(
        api, [(build.token, build.build.pk, f"f{i}", body) for i, body in enumerate(bodies)]
    )

    assert sorted(r.status_code for r in responses) == [201] * 3 + [413] * 3
    stored = Artifact.objects.filter(build=build.build)
    assert stored.count() == 3
    assert usage(build.build) == (3000, 3) and usage(project) == (3000, 3)
    listed = len(api.as_key(build.token).get(artifact_url(build.build.pk)).json()["results"])
    assert listed == 3
    # The refused uploads' bytes were removed again: only the linked blobs remain.
    root = Store("filesystem", root=settings.ARTIFACT_ROOT).objects()
    assert sorted(root) == sorted(a.blob.storage_name for a in stored.select_related("blob"))
