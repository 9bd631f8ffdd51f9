"""The deploy token is one token shared by every trusted build and every CD consumer: no single
holder may cut the others off, neither by revoking it nor by tripping the tripwire."""

from datetime import timedelta

import pytest
from django.utils import timezone

from devtools.factories import make_project, make_project_key
from tokens.models import ApiKey, AuditEvent
from tokens.scopes import Scope

pytestmark = pytest.mark.django_db

MANAGE = (Scope.BUILDS_CREATE, Scope.TOKENS_MANAGE)


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.TRIPWIRE_WRITE_DENIALS = 5
    settings.TRIPWIRE_WINDOW_SECONDS = 3600
    settings.DEPLOY_TOKEN_ROTATION_GRACE_SECONDS = 86400


@pytest.fixture
def manager_token(project) -> str:
    type(project).objects.filter(pk=project.pk).update(deploy_tokens_enabled=True)
    return make_project_key(project, scopes=MANAGE)


def create_build(api, token) -> dict:
    response = api.as_key(token).post(
        "/api/v1/projects/app/builds/",
        {"ref": "refs/heads/main", "commit": "abc", "trusted": True},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def reads(api, token, build_id) -> int:
    return api.as_key(token).get(f"/api/v1/builds/{build_id}/").status_code


def test_a_deploy_token_cannot_revoke_itself(api, manager_token):
    build = create_build(api, manager_token)
    deploy = build["deploy_token"]
    response = api.as_key(deploy["token"]).delete(f"/api/v1/keys/{deploy['id']}")
    assert response.status_code == 403
    assert response.json()["code"] == "shared_key"
    assert "tokens:manage" in response.json()["detail"]
    assert reads(api, deploy["token"], build["id"]) == 200
    event = AuditEvent.objects.get(action="write_denied", key_id=deploy["id"])
    assert event.reason == "shared key cannot revoke itself"


def test_a_key_with_tokens_manage_revokes_the_deploy_token(api, manager_token):
    build = create_build(api, manager_token)
    deploy = build["deploy_token"]
    assert api.as_key(manager_token).delete(f"/api/v1/keys/{deploy['id']}").status_code == 204
    assert reads(api, deploy["token"], build["id"]) == 401
    assert AuditEvent.objects.get(action="revoke").actor.startswith("key:")


def test_other_keys_cannot_revoke_the_deploy_token(api, manager_token, project):
    build = create_build(api, manager_token)
    deploy_id = build["deploy_token"]["id"]
    elsewhere = make_project(slug="elsewhere")
    for token in [
        make_project_key(project),  # no tokens:manage
        make_project_key(elsewhere, scopes=MANAGE),  # another project's manager
        build["key"]["token"],  # the trusted build's own key
    ]:
        assert api.as_key(token).delete(f"/api/v1/keys/{deploy_id}").status_code == 404
    assert reads(api, build["deploy_token"]["token"], build["id"]) == 200


def write_attempts(api, token, build_id, n=5) -> None:
    for _ in range(n):
        response = api.as_key(token).put(
            f"/api/v1/builds/{build_id}/artifacts/x.txt",
            b"x",
            content_type="application/octet-stream",
        )
        assert response.status_code == 403


def test_the_tripwire_rotates_a_deploy_token_with_grace_instead_of_revoking_it(
    api, manager_token, monkeypatch
):
    build = create_build(api, manager_token)
    deploy = build["deploy_token"]
    write_attempts(api, deploy["token"], build["id"])

    # Every consumer keeps working for the grace period ...
    assert reads(api, deploy["token"], build["id"]) == 200
    old = ApiKey.objects.get(pk=deploy["id"])
    assert old.revoked_at is None
    # ... while new builds are handed the replacement, with the same restriction.
    handed = create_build(api, manager_token)["deploy_token"]
    assert handed["id"] != deploy["id"]
    assert ApiKey.objects.get(pk=handed["id"]).replaces_id == deploy["id"]
    assert reads(api, handed["token"], build["id"]) == 200
    tripped = AuditEvent.objects.get(action="tripwire")
    assert tripped.key_id == deploy["id"]
    assert tripped.reason.startswith("suspected leak: 5 denied write attempts")
    assert tripped.detail["suspected_leak"] is True
    assert tripped.detail["rotated_to"] == handed["id"]
    assert AuditEvent.objects.get(action="rotate").actor == "system"

    later = timezone.now() + timedelta(seconds=86400 + 1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert reads(api, deploy["token"], build["id"]) == 401
    assert reads(api, handed["token"], build["id"]) == 200


def test_further_denials_after_the_trip_do_not_rotate_again(api, manager_token):
    build = create_build(api, manager_token)
    deploy = build["deploy_token"]
    write_attempts(api, deploy["token"], build["id"], n=12)
    assert AuditEvent.objects.filter(action="tripwire").count() == 1
    assert AuditEvent.objects.filter(action="rotate").count() == 1
    assert ApiKey.objects.filter(kind="deploy").count() == 2


def test_a_trip_of_a_token_already_retiring_is_recorded_and_spares_its_successor(
    api, manager_token
):
    build = create_build(api, manager_token)
    old = build["deploy_token"]
    rotated = api.as_key(manager_token).post("/api/v1/projects/app/deploy-tokens/rotate")
    new = rotated.json()
    write_attempts(api, old["token"], build["id"])
    assert reads(api, new["token"], build["id"]) == 200
    assert ApiKey.objects.filter(kind="deploy").count() == 2
    tripped = AuditEvent.objects.get(action="tripwire", key_id=old["id"])
    assert tripped.detail["rotated_to"] == new["id"]


def test_a_key_of_one_job_is_still_revoked_by_the_tripwire(api, build):
    derived = api.as_key(build.token).post(
        "/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json"
    )
    token = derived.json()["token"]
    write_attempts(api, token, build.build.pk)
    assert reads(api, token, build.build.pk) == 401
    assert ApiKey.objects.get(pk=derived.json()["id"]).revoked_reason == "tripwire"


def test_revoking_an_id_beyond_any_key_is_404(api, manager_token):
    client = api.as_key(manager_token)
    for key_id in ("0", "9" * 30):
        assert client.delete(f"/api/v1/keys/{key_id}").status_code == 404
