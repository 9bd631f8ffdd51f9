import pytest

from builds.services import build_finish
from tokens.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tripwire(settings):
    settings.TRIPWIRE_WRITE_DENIALS = 5
    settings.TRIPWIRE_WINDOW_SECONDS = 3600


def upload(client, build_id, path="dist/app.txt"):
    return client.put(
        f"/api/v1/builds/{build_id}/artifacts/{path}",
        b"payload",
        content_type="application/octet-stream",
    )


def finished_build_key(build):
    build_finish(build=build.build, state="succeeded")
    return build.token


def deploy_token(build):
    from tokens.services import deploy_token_current

    project = build.build.project
    project.deploy_tokens_enabled = True
    project.save(update_fields=["deploy_tokens_enabled"])
    return deploy_token_current(project=project)[1]


def read_only_derived_key(build, api):
    response = api.as_key(build.token).post(
        "/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json"
    )
    return response.json()["token"]


READ_ONLY_KEYS = {
    "finished build key": lambda build, api: finished_build_key(build),
    "deploy token": lambda build, api: deploy_token(build),
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
