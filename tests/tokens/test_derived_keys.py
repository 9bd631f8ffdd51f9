from datetime import timedelta

import pytest
from django.utils import timezone

from builds.services import build_finish
from devtools.factories import make_build
from tokens.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db


def derive(api, token, **body):
    return api.as_key(token).post("/api/v1/keys/", body, format="json")


def derived(api, token, **body) -> dict:
    response = derive(api, token, **body)
    assert response.status_code == 201, response.content
    return response.json()


def finish(build) -> None:
    build_finish(build=build.build, state="succeeded")


def test_build_key_derives_a_read_only_key_that_reads_but_cannot_finish(api, build):
    child = derived(api, build.token, scopes=["artifacts:read"], expires_in=600, name="tests")
    assert child["token"].startswith("acx_")
    assert child["scopes"] == ["artifacts:read"]
    assert child["parent"] == build.key.pk
    assert child["name"] == "tests"
    client = api.as_key(child["token"])
    assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 200
    response = client.post(f"/api/v1/builds/{build.build.pk}/finish", {"state": "succeeded"})
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"


def test_keys_mint_is_passed_on_only_when_asked_for(api, build):
    by_default = derived(api, build.token, expires_in=600)
    assert "keys:mint" not in by_default["scopes"]
    assert "artifacts:write" in by_default["scopes"]
    assert derive(api, by_default["token"], scopes=["artifacts:read"]).status_code == 403
    asked = derived(api, build.token, scopes=["artifacts:read", "keys:mint"], expires_in=600)
    assert "keys:mint" in asked["scopes"]
    assert derive(api, asked["token"], scopes=["artifacts:read"]).status_code == 201


def test_a_finished_build_key_cannot_derive_write_scopes(api, build):
    finish(build)
    response = derive(api, build.token, scopes=["artifacts:read", "artifacts:write"])
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "scope_escalation"
    assert "artifacts:write" in body["detail"]
    assert ApiKey.objects.filter(kind="derived").count() == 0
    assert AuditEvent.objects.filter(
        key=build.key, action="denied", reason__contains="scope_escalation"
    ).exists()


def test_a_derived_key_cannot_widen_what_its_parent_holds(api, build):
    reader = derived(api, build.token, scopes=["artifacts:read", "keys:mint"], expires_in=600)
    response = derive(api, reader["token"], scopes=["artifacts:read", "build:finish"])
    assert response.status_code == 403
    assert response.json()["code"] == "scope_escalation"


def test_a_derived_key_follows_its_builds_downgrade(api, build):
    child = derived(api, build.token, scopes=["artifacts:read", "artifacts:write"])
    assert api.as_key(child["token"]).get("/api/v1/keys/self").json()["state"] == "active"
    finish(build)
    body = api.as_key(child["token"]).get("/api/v1/keys/self").json()
    assert body["scopes"] == ["artifacts:read"]
    assert body["state"] == "read-only"


def test_expiry_may_not_exceed_the_parents(api, build):
    ApiKey.objects.filter(pk=build.key.pk).update(expires_at=timezone.now() + timedelta(hours=1))
    response = derive(api, build.token, scopes=["artifacts:read"], expires_in=2 * 3600)
    assert response.status_code == 403
    assert response.json()["code"] == "expiry_beyond_parent"


def test_without_expires_in_the_child_expires_with_its_parent_at_the_latest(api, build):
    parent_expiry = timezone.now() + timedelta(hours=1)
    ApiKey.objects.filter(pk=build.key.pk).update(expires_at=parent_expiry)
    child = derived(api, build.token, scopes=["artifacts:read"])
    assert ApiKey.objects.get(pk=child["id"]).expires_at == parent_expiry


def test_expiry_may_not_exceed_the_maximum_lifetime(api, build, settings):
    settings.KEY_DERIVED_MAX_SECONDS = 3600
    response = derive(api, build.token, scopes=["artifacts:read"], expires_in=3601)
    assert response.status_code == 403
    assert response.json()["code"] == "expiry_too_long"
    child = derived(api, build.token, scopes=["artifacts:read"])
    expires_at = ApiKey.objects.get(pk=child["id"]).expires_at
    assert expires_at <= timezone.now() + timedelta(seconds=3600)


def test_an_absurd_expiry_is_refused_not_a_server_error(api, build):
    response = derive(api, build.token, scopes=["artifacts:read"], expires_in=10**30)
    assert response.status_code == 403


def test_path_prefix_must_lie_inside_the_callers_own_prefix(api, build):
    dist = derived(
        api, build.token, scopes=["artifacts:read", "keys:mint"], path_prefix="dist/", expires_in=60
    )
    assert dist["path_prefix"] == "dist/"
    outside = derive(api, dist["token"], scopes=["artifacts:read"], path_prefix="src/")
    assert outside.status_code == 403
    assert outside.json()["code"] == "outside_resource"
    inside = derived(api, dist["token"], scopes=["artifacts:read"], path_prefix="dist/app/")
    assert inside["path_prefix"] == "dist/app/"
    inherited = derived(api, dist["token"], scopes=["artifacts:read"])
    assert inherited["path_prefix"] == "dist/"


def test_a_derived_key_stays_on_its_parents_build(api, build, other_build):
    child = derived(api, build.token, scopes=["artifacts:read"])
    client = api.as_key(child["token"])
    assert client.get(f"/api/v1/builds/{other_build.build.pk}/").status_code == 404
    assert client.get("/api/v1/keys/self").json()["build"] == build.build.pk


def test_untrusted_builds_cannot_mint(api, project):
    untrusted = make_build(project, trusted=False)
    response = derive(api, untrusted.token, scopes=["artifacts:read"])
    assert response.status_code == 403
    assert response.json()["code"] == "untrusted_build"


def test_derivation_depth_is_limited(api, build, settings):
    settings.KEY_DERIVE_MAX_DEPTH = 2
    token = build.token
    for _ in range(2):
        token = derived(api, token, scopes=["artifacts:read", "keys:mint"])["token"]
    response = derive(api, token, scopes=["artifacts:read"])
    assert response.status_code == 403
    assert response.json()["code"] == "derivation_too_deep"


def test_deriving_is_audited_without_the_token(api, build):
    child = derived(api, build.token, scopes=["artifacts:read"])
    event = AuditEvent.objects.get(action="derive")
    assert event.key_id == child["id"]
    assert event.actor == f"key:{build.key.pk}"
    assert event.build_id == build.build.pk
    assert child["token"] not in repr(event.__dict__)


@pytest.mark.parametrize(
    "body",
    [
        {"scopes": "artifacts:read"},
        {"scopes": []},
        {"scopes": ["artifacts:read", "root"]},
        {"scopes": [1]},
        {"scopes": [None]},
        {"scopes": ["artifacts:read"] * 50},
        {"expires_in": 0},
        {"expires_in": -5},
        {"expires_in": "soon"},
        {"expires_in": 1.5},
        {"expires_in": None},
        {"name": "x" * 201},
        {"name": "a\x00b"},
        {"path_prefix": "/etc/"},
        {"path_prefix": "../other"},
        {"path_prefix": "dist/../../x"},
        {"path_prefix": "dist\x00/"},
        {"path_prefix": "dist\\win"},
        {"path_prefix": "dist/\n"},
        {"path_prefix": "d/" * 300},
        {"path_prefix": ["dist/"]},
    ],
)
def test_bad_derive_input_is_400_and_creates_nothing(api, build, body):
    response = derive(api, build.token, **body)
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert ApiKey.objects.filter(kind="derived").count() == 0


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"scopes"', b"{not json", b"null"])
def test_a_body_that_is_not_a_json_object_is_400(api, build, raw):
    response = api.as_key(build.token).generic(
        "POST", "/api/v1/keys/", raw, content_type="application/json"
    )
    assert response.status_code == 400


# --- revocation -----------------------------------------------------------------------------


def revoke(api, token, key_id):
    return api.as_key(token).delete(f"/api/v1/keys/{key_id}")


def test_a_key_revokes_a_descendant_and_the_whole_subtree_below_it(api, build):
    child = derived(api, build.token, scopes=["artifacts:read", "keys:mint"])
    grandchild = derived(api, child["token"], scopes=["artifacts:read"])
    assert revoke(api, build.token, child["id"]).status_code == 204
    for token in (child["token"], grandchild["token"]):
        response = api.as_key(token).get("/api/v1/keys/self")
        assert response.status_code == 401
        assert response.json()["code"] == "revoked"
    assert api.as_key(build.token).get("/api/v1/keys/self").status_code == 200
    event = AuditEvent.objects.get(action="revoke")
    assert event.key_id == child["id"]
    assert event.actor == f"key:{build.key.pk}"
    assert event.detail == {"revoked_keys": 2}


def test_a_key_may_revoke_itself(api, build):
    child = derived(api, build.token, scopes=["artifacts:read"])
    assert revoke(api, child["token"], child["id"]).status_code == 204
    assert api.as_key(child["token"]).get("/api/v1/keys/self").status_code == 401


def test_a_child_cannot_revoke_its_parent_or_a_sibling(api, build):
    first = derived(api, build.token, scopes=["artifacts:read"])
    second = derived(api, build.token, scopes=["artifacts:read"])
    assert revoke(api, first["token"], build.key.pk).status_code == 404
    assert revoke(api, first["token"], second["id"]).status_code == 404
    assert api.as_key(build.token).get("/api/v1/keys/self").status_code == 200


@pytest.mark.parametrize("target", ["other_build_key", "unknown", "huge"])
def test_other_keys_are_404_to_revoke(api, build, other_build, target):
    key_id = {"other_build_key": other_build.key.pk, "unknown": 999999, "huge": 10**30}[target]
    response = revoke(api, build.token, key_id)
    assert response.status_code == 404
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()


def test_revoking_twice_is_harmless(api, build):
    child = derived(api, build.token, scopes=["artifacts:read"])
    assert revoke(api, build.token, child["id"]).status_code == 204
    assert revoke(api, build.token, child["id"]).status_code == 204
    assert AuditEvent.objects.filter(action="revoke").count() == 1


def test_a_revoked_ancestor_kills_descendants_on_the_next_request(api, build):
    """Even a descendant the cascade never marked (e.g. committed in a race) is refused."""
    child = derived(api, build.token, scopes=["artifacts:read", "keys:mint"])
    grandchild = derived(api, child["token"], scopes=["artifacts:read"])
    ApiKey.objects.filter(pk=child["id"]).update(revoked_at=timezone.now())
    response = api.as_key(grandchild["token"]).get("/api/v1/keys/self")
    assert response.status_code == 401
    assert response.json()["code"] == "revoked"


def test_an_expired_ancestor_kills_descendants(api, build):
    child = derived(api, build.token, scopes=["artifacts:read"])
    ApiKey.objects.filter(pk=build.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api.as_key(child["token"]).get("/api/v1/keys/self").status_code == 401


def test_keys_self_shows_when_and_from_where_the_key_was_last_used(api, build):
    body = api.as_key(build.token).get("/api/v1/keys/self", REMOTE_ADDR="10.1.2.3").json()
    assert body["last_used_at"] is not None
    assert body["last_used_ip"] == "10.1.2.3"
