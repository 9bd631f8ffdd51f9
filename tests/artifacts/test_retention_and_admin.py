import os
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from artifacts import services, tasks
from artifacts.models import Artifact, Blob
from builds.models import Build
from devtools.factories import make_build, make_project

from .conftest import download, sha256, upload

pytestmark = pytest.mark.django_db


def age(build, days: int) -> None:
    Build.objects.filter(pk=build.build.pk).update(created_at=timezone.now() - timedelta(days=days))


@pytest.fixture
def retention(api, store):
    """A project keeping artifacts 7 days: an expired and a current build sharing one file,
    each with a file of its own."""
    project = make_project(slug="kept-a-week", retention_days=7)
    old, new = make_build(project), make_build(project)
    shared, old_only, new_only = os.urandom(5000), os.urandom(4000), os.urandom(3000)
    for created, files in [
        (old, {"shared": shared, "mine": old_only}),
        (new, {"shared": shared, "mine": new_only}),
    ]:
        for path, data in files.items():
            assert upload(api, created.token, created.build.pk, path, data).status_code == 201
    age(old, days=8)
    # Long after the uploads, so the blobs' grace period is over too.
    later = timezone.now() + timedelta(days=2)
    return project, old, new, {"shared": shared, "old": old_only, "new": new_only}, later


def test_purge_removes_exactly_the_expired_builds_data(api, store, retention):
    _, old, new, files, later = retention
    assert len(store.objects()) == 3

    result = services.retention_purge(now=later)

    assert (result.artifacts, result.blobs) == (2, 1)
    assert not Artifact.objects.filter(build=old.build).exists()
    assert len(store.objects()) == 2
    assert download(api, new.token, new.build.pk, "shared").body == files["shared"]
    assert download(api, new.token, new.build.pk, "mine").body == files["new"]
    assert Build.objects.filter(pk=old.build.pk).exists()


def test_purging_twice_changes_nothing_more(store, retention):
    *_, later = retention
    services.retention_purge(now=later)
    again = services.retention_purge(now=later)
    assert (again.artifacts, again.blobs) == (0, 0)


def test_an_upload_of_the_same_bytes_in_flight_keeps_its_blob(api, store, retention):
    """An upload announcing a digest the store holds touches the blob before streaming; the
    purge spares blobs touched within the grace period, so the bytes are there to link."""
    _, old, _, files, later = retention
    services.retention_purge(now=timezone.now())  # artifacts expire; blobs still in grace
    assert Blob.objects.filter(pk__in=Blob.objects.unreferenced()).count() == 1
    newest = make_build(old.build.project)
    response = upload(
        api,
        newest.token,
        newest.build.pk,
        "again",
        files["old"],
        headers={"X-Checksum-Sha256": sha256(files["old"])},
    )
    assert response.status_code == 201
    assert services.retention_purge(now=later).blobs == 0
    assert download(api, newest.token, newest.build.pk, "again").body == files["old"]


def test_purge_spares_a_blob_referenced_again_before_its_turn(store, retention):
    _, old, new, _, later = retention
    blob = Artifact.objects.get(build=old.build, path="mine").blob
    Artifact.objects.filter(build=old.build).delete()
    Artifact.objects.create(build=new.build, path="relinked", blob=blob)
    assert not services.blob_purge_if_unreferenced(sha256=blob.sha256, referenced_before=later)
    assert Blob.objects.filter(pk=blob.pk).exists()


def run_purge_command(capsys) -> tuple[int, int]:
    call_command("purge_artifacts")
    out = capsys.readouterr().out
    counts = re.search(r"Purged (\d+) artifact\(s\), (\d+) blob\(s\)", out)
    assert counts, out
    return int(counts[1]), int(counts[2])


def run_purge_task(capsys) -> tuple[int, int]:
    result = tasks.retention_purge.apply().get()
    assert result["staging"] == 0
    return result["artifacts"], result["blobs"]


@pytest.mark.parametrize("run", [run_purge_command, run_purge_task], ids=["command", "task"])
def test_the_command_and_the_beat_task_each_purge_the_expired_data(
    api, store, retention, capsys, run
):
    """Each on its own, on the same state: a task (or command) that does nothing fails here."""
    _, old, new, files, _ = retention
    Blob.objects.update(referenced_at=timezone.now() - timedelta(days=3))
    assert run(capsys) == (2, 1)
    assert not Artifact.objects.filter(build=old.build).exists()
    assert len(store.objects()) == 2
    assert download(api, new.token, new.build.pk, "shared").body == files["shared"]


def test_admin_lists_artifacts_and_blobs_read_only(admin_client, api, build):
    data = b"admin sees this"
    upload(api, build.token, build.build.pk, "dist/app.tar.gz", data)
    artifacts = admin_client.get("/admin/artifacts/artifact/")
    assert artifacts.status_code == 200
    assert b"dist/app.tar.gz" in artifacts.content
    blobs = admin_client.get("/admin/artifacts/blob/")
    assert blobs.status_code == 200
    assert Blob.objects.get().sha256.encode() in blobs.content
    assert admin_client.get("/admin/artifacts/blob/add/").status_code == 403
    blob = Blob.objects.get()
    assert b"Delete" not in admin_client.get(f"/admin/artifacts/blob/{blob.pk}/change/").content
