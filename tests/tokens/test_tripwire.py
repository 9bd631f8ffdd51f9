from datetime import timedelta

import pytest
from django.utils import timezone

from builds.models import Build
from builds.services import build_finish
from devtools.factories import make_build
from tokens.models import ApiKey, AuditEvent
from tokens.services import key_denied

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tripwire(settings):
    settings.TRIPWIRE_WRITE_DENIALS = 5
    settings.TRIPWIRE_WINDOW_SECONDS = 3600
    settings.TRIPWIRE_FINISH_GRACE_SECONDS = 300


def upload(client, build_id, path="dist/app.txt"):
    return client.put(
        f"/api/v1/builds/{build_id}/artifacts/{path}",
        b"payload",
        content_type="application/octet-stream",
    )


def finished_build_key(build):
    """The key of a build that finished a while ago (past the grace for jobs still running)."""
    build_finish(build=build.build, state="succeeded")
    Build.objects.filter(pk=build.build.pk).update(finished_at=timezone.now() - timedelta(hours=1))
    return build.token


def read_only_derived_key(build, api):
    response = api.as_key(build.token).post(
        "/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json"
    )
    return response.json()["token"]


# The deploy token is shared by many jobs: the tripwire rotates it instead (test_shared_keys.py).
READ_ONLY_KEYS = {
    "finished build key": lambda build, api: finished_build_key(build),
    "read-only derived key": read_only_derived_key,
}


@pytest.mark.parametrize("kind", READ_ONLY_KEYS)
def test_repeated_write_attempts_with_a_read_only_key_trip_its_revocation(api, build, kind):
    token = READ_ONLY_KEYS[kind](build, api)
    client = api.as_key(token)
    for attempt in range(5):
        response = upload(client, build.build.pk)
        assert response.status_code == 403, (attempt, response.content)
        assert response.json()["code"] == "missing_scope"
    assert AuditEvent.objects.filter(action="write_denied").count() == 5
    response = client.get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 401
    assert response.json()["code"] == "revoked"
    key = ApiKey.objects.get(revoked_reason="tripwire")
    tripped = AuditEvent.objects.get(action="tripwire")
    assert tripped.key_id == key.pk
    assert "5 denied write attempts" in tripped.reason


def test_each_denial_is_audited_with_what_was_missing_and_where(api, build):
    client = api.as_key(finished_build_key(build))
    upload(client, build.build.pk, "x.bin")
    event = AuditEvent.objects.get(action="write_denied")
    assert event.key_id == build.key.pk
    assert event.reason == "missing scope"
    assert event.detail == {
        "missing": ["artifacts:write"],
        "path": f"/api/v1/builds/{build.build.pk}/artifacts/x.bin",
    }


def test_fewer_denials_than_the_threshold_leave_the_key_alive(api, build):
    client = api.as_key(finished_build_key(build))
    for _ in range(4):
        upload(client, build.build.pk)
    assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 200


def test_denials_outside_the_window_do_not_count(api, build, settings):
    client = api.as_key(finished_build_key(build))
    for _ in range(4):
        upload(client, build.build.pk)
    AuditEvent.objects.filter(action="write_denied").update(created_at="2000-01-01T00:00:00Z")
    upload(client, build.build.pk)
    assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 200


def test_reads_outside_the_scope_do_not_count_towards_the_tripwire(api, project_token, build):
    client = api.as_key(project_token)
    for _ in range(6):
        assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 403
    assert client.get("/api/v1/keys/self").status_code == 200
    assert AuditEvent.objects.filter(action="denied").count() == 6


def test_finishing_a_finished_build_again_is_a_conflict_not_a_denial(api, build):
    client = api.as_key(finished_build_key(build))
    for _ in range(6):
        response = client.post(f"/api/v1/builds/{build.build.pk}/finish", {"state": "failed"})
        assert response.status_code == 409
    assert client.get("/api/v1/keys/self").status_code == 200


def test_tripping_a_parent_revokes_what_was_derived_from_it(api, build):
    child = api.as_key(build.token).post(
        "/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json"
    )
    client = api.as_key(finished_build_key(build))
    for _ in range(5):
        upload(client, build.build.pk)
    assert api.as_key(child.json()["token"]).get("/api/v1/keys/self").status_code == 401


def test_a_tripped_key_shows_as_revoked_by_the_tripwire_in_the_admin(admin_client, api, build):
    client = api.as_key(finished_build_key(build))
    for _ in range(5):
        upload(client, build.build.pk)
    listing = admin_client.get("/admin/tokens/apikey/?state=revoked").content.decode()
    assert "tripwire" in listing and "app#1" in listing
    page = admin_client.get(f"/admin/tokens/apikey/{build.key.pk}/change/").content.decode()
    assert "tripwire" in page and "write denied" in page
    audit = admin_client.get("/admin/tokens/auditevent/?action=tripwire").content.decode()
    assert "denied write attempts" in audit
    assert build.token not in page + listing + audit


def test_a_job_still_uploading_when_its_build_is_canceled_does_not_trip(api, build):
    status_key = api.as_key(build.token).post(
        "/api/v1/keys/", {"scopes": ["build:status"]}, format="json"
    )
    build_finish(build=build.build, state="canceled")
    client = api.as_key(build.token)
    for _ in range(6):
        assert upload(client, build.build.pk).status_code == 403
    assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 200
    assert api.as_key(status_key.json()["token"]).get("/api/v1/keys/self").status_code == 200
    assert not AuditEvent.objects.filter(action__in=["write_denied", "tripwire"]).exists()
    denied = AuditEvent.objects.filter(action="denied", key=build.key)
    assert denied.count() == 6
    assert {e.reason for e in denied} == {"write after its build finished (within grace)"}


def test_the_same_key_replayed_after_the_grace_still_trips(api, build, settings, monkeypatch):
    build_finish(build=build.build, state="canceled")
    client = api.as_key(build.token)
    upload(client, build.build.pk)
    moved = timezone.now() + timedelta(seconds=settings.TRIPWIRE_FINISH_GRACE_SECONDS + 1)
    monkeypatch.setattr(timezone, "now", lambda: moved)
    for _ in range(5):
        assert upload(client, build.build.pk).status_code == 403
    assert ApiKey.objects.get(pk=build.key.pk).revoked_reason == "tripwire"


def test_a_read_only_derived_key_writing_right_after_the_build_finished_still_counts(api, build):
    """The grace is for scopes the key was granted and lost to the finish, not for a key that
    never could write."""
    token = read_only_derived_key(build, api)
    build_finish(build=build.build, state="succeeded")
    for _ in range(5):
        upload(api.as_key(token), build.build.pk)
    assert api.as_key(token).get("/api/v1/keys/self").status_code == 401


def test_an_untrusted_build_asking_to_mint_does_not_trip_its_own_key(api, project):
    untrusted = make_build(project, trusted=False)
    client = api.as_key(untrusted.token)
    for _ in range(6):
        response = client.post("/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json")
        assert response.status_code == 403
        assert response.json()["code"] == "untrusted_build"
    assert upload(client, untrusted.build.pk).status_code == 201
    assert not AuditEvent.objects.filter(action__in=["write_denied", "tripwire"]).exists()
    denied = AuditEvent.objects.filter(action="denied", key=untrusted.key)
    assert [e.reason for e in denied] == ["untrusted build cannot mint"] * 6


def test_a_denial_racing_the_tripwire_does_not_audit_a_second_trip(api, build):
    stale = ApiKey.objects.select_related("build", "project").get(pk=build.key.pk)
    client = api.as_key(finished_build_key(build))
    for _ in range(5):
        upload(client, build.build.pk)
    stale.build.refresh_from_db()
    key_denied(key=stale, missing={"artifacts:write"}, ip=None, path="/racing")
    assert AuditEvent.objects.filter(action="tripwire").count() == 1
    assert AuditEvent.objects.filter(action="revoke").count() == 1
