"""A write outside a key's path prefix is a refusal like any other (audited, counted by the
tripwire), and a prefix-limited key learns nothing about what lies outside its prefix."""

import pytest

from tokens.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.TRIPWIRE_WRITE_DENIALS = 5
    settings.TRIPWIRE_WINDOW_SECONDS = 3600


def put(client, build_id, path, body=b"x"):
    return client.put(
        f"/api/v1/builds/{build_id}/artifacts/{path}", body, content_type="application/octet-stream"
    )


def derive(api, token, prefix, scopes):
    response = api.as_key(token).post(
        "/api/v1/keys/", {"scopes": scopes, "path_prefix": prefix}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_a_write_outside_the_prefix_is_an_audited_write_denial(api, build):
    key = derive(api, build.token, "dist/", ["artifacts:read", "artifacts:write"])
    response = put(api.as_key(key["token"]), build.build.pk, "secrets/x.txt")
    assert response.status_code == 403
    assert response.json()["code"] == "path_not_allowed"
    assert "'dist/'" in response.json()["detail"]
    event = AuditEvent.objects.get(action="write_denied")
    assert event.key_id == key["id"]
    assert event.reason == "outside path prefix"
    assert event.detail["path"] == f"/api/v1/builds/{build.build.pk}/artifacts/secrets/x.txt"


def test_repeated_writes_outside_the_prefix_trip_the_tripwire(api, build):
    key = derive(api, build.token, "dist/", ["artifacts:read", "artifacts:write"])
    client = api.as_key(key["token"])
    for _ in range(5):
        assert put(client, build.build.pk, "other/x.txt").status_code == 403
    assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 401
    assert AuditEvent.objects.filter(action="tripwire", key_id=key["id"]).count() == 1


def test_a_prefix_limited_key_sees_only_the_totals_under_its_prefix(api, build):
    client = api.as_key(build.token)
    assert put(client, build.build.pk, "dist/a.txt", b"12345").status_code == 201
    assert put(client, build.build.pk, "dist/b.txt", b"123").status_code == 201
    assert put(client, build.build.pk, "private/big.bin", b"x" * 1000).status_code == 201
    assert put(client, build.build.pk, "DIST/c.txt", b"xx").status_code == 201

    whole = client.get(f"/api/v1/builds/{build.build.pk}/").json()
    assert (whole["artifact_count"], whole["total_size"]) == (4, 1010)
    limited = derive(api, build.token, "dist/", ["artifacts:read"])
    seen = api.as_key(limited["token"]).get(f"/api/v1/builds/{build.build.pk}/").json()
    assert (seen["artifact_count"], seen["total_size"]) == (2, 8)
    empty = derive(api, build.token, "nothing/", ["artifacts:read"])
    seen = api.as_key(empty["token"]).get(f"/api/v1/builds/{build.build.pk}/").json()
    assert (seen["artifact_count"], seen["total_size"]) == (0, 0)
