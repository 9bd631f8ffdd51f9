from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from devtools.factories import make_project, make_project_key
from tests.conftest import Api
from tokens import crypto
from tokens.models import ApiKey, AuditEvent
from tokens.scopes import Scope

pytestmark = pytest.mark.django_db

MANAGE = (Scope.BUILDS_CREATE, Scope.TOKENS_MANAGE)


@pytest.fixture
def deploying(project):
    project.deploy_tokens_enabled = True
    project.save(update_fields=["deploy_tokens_enabled"])
    return project


@pytest.fixture
def manager_token(deploying) -> str:
    return make_project_key(deploying, scopes=MANAGE)


def create_build(api, token, ref="refs/heads/main", slug="app") -> dict:
    response = api.as_key(token).post(
        f"/api/v1/projects/{slug}/builds/",
        {"ref": ref, "commit": "abc", "trusted": True},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def rotate(api, token, slug="app", **body):
    return api.as_key(token).post(
        f"/api/v1/projects/{slug}/deploy-tokens/rotate", body, format="json"
    )


def later(monkeypatch, seconds: float) -> None:
    """Move the clock forward for the code under test."""
    moved = timezone.now() + timedelta(seconds=seconds)
    monkeypatch.setattr(timezone, "now", lambda: moved)


def reads(api, token, build_id) -> int:
    return api.as_key(token).get(f"/api/v1/builds/{build_id}/").status_code


def test_rotation_hands_out_a_new_token_and_the_old_one_works_until_grace_ends(
    api, manager_token, settings, monkeypatch
):
    settings.DEPLOY_TOKEN_ROTATION_GRACE_SECONDS = 3600
    build = create_build(api, manager_token)
    old = build["deploy_token"]
    response = rotate(api, manager_token)
    assert response.status_code == 201, response.content
    new = response.json()
    assert new["token"].startswith("acd_") and new["token"] != old["token"]
    assert new["previous"]["id"] == old["id"]
    assert reads(api, old["token"], build["id"]) == 200
    assert reads(api, new["token"], build["id"]) == 200

    later(monkeypatch, 3601)
    response = api.as_key(old["token"]).get(f"/api/v1/builds/{build['id']}/")
    assert response.status_code == 401
    assert response.json()["code"] == "expired"
    assert reads(api, new["token"], build["id"]) == 200


def test_a_retried_rotation_within_grace_returns_the_same_new_token(api, manager_token):
    create_build(api, manager_token)
    first = rotate(api, manager_token)
    retry = rotate(api, manager_token)
    assert first.status_code == 201
    assert retry.status_code == 200
    assert retry.json() == first.json()
    assert ApiKey.objects.filter(kind="deploy").count() == 2
    assert AuditEvent.objects.filter(action="rotate").count() == 1


def test_after_the_grace_period_a_rotation_mints_a_fresh_token(
    api, manager_token, settings, monkeypatch
):
    settings.DEPLOY_TOKEN_ROTATION_GRACE_SECONDS = 60
    first = rotate(api, manager_token).json()
    second = rotate(api, manager_token).json()
    assert second["id"] == first["id"]
    later(monkeypatch, 61)
    third = rotate(api, manager_token)
    assert third.status_code == 201
    assert third.json()["id"] != first["id"]
    assert third.json()["previous"]["id"] == first["id"]


def test_new_builds_are_handed_the_new_token(api, manager_token):
    create_build(api, manager_token)
    new = rotate(api, manager_token).json()
    assert create_build(api, manager_token)["deploy_token"]["token"] == new["token"]


def test_rotation_ends_the_old_tokens_descendants_with_it(api, manager_token, settings):
    """Deploy tokens cannot mint today; if a descendant exists, it dies with its root."""
    settings.DEPLOY_TOKEN_ROTATION_GRACE_SECONDS = 600
    old_id = create_build(api, manager_token)["deploy_token"]["id"]
    old = ApiKey.objects.get(pk=old_id)
    child = ApiKey.objects.create(
        kind="derived",
        project=old.project,
        parent=old,
        lineage=old.subtree_lineage,
        scopes=["artifacts:read"],
        digest="0" * 64,
        expires_at=old.expires_at,
    )
    rotate(api, manager_token)
    old.refresh_from_db()
    child.refresh_from_db()
    assert old.expires_at <= timezone.now() + timedelta(seconds=600)
    assert child.expires_at == old.expires_at


def test_a_deploy_token_can_be_restricted_to_a_ref_pattern(api, manager_token):
    tag = create_build(api, manager_token, ref="refs/tags/v1.2.0")
    branch = create_build(api, manager_token, ref="refs/heads/main")
    new = rotate(api, manager_token, ref_pattern="refs/tags/v*.*").json()
    assert new["ref_pattern"] == "refs/tags/v*.*"
    assert reads(api, new["token"], tag["id"]) == 200
    assert reads(api, new["token"], branch["id"]) == 404


def test_rotation_keeps_the_ref_pattern_unless_told_otherwise(
    api, manager_token, settings, monkeypatch
):
    settings.DEPLOY_TOKEN_ROTATION_GRACE_SECONDS = 1
    rotate(api, manager_token, ref_pattern="refs/tags/*")
    later(monkeypatch, 2)
    assert rotate(api, manager_token).json()["ref_pattern"] == "refs/tags/*"
    later(monkeypatch, 4)
    assert rotate(api, manager_token, ref_pattern="").json()["ref_pattern"] == ""


def test_deploy_tokens_always_expire_within_the_maximum(api, manager_token, settings):
    settings.DEPLOY_TOKEN_MAX_DAYS = 10
    response = rotate(api, manager_token, expires_in=10 * 86400 + 1)
    assert response.status_code == 400
    assert response.json()["code"] == "max_value"
    new = rotate(api, manager_token).json()
    expires_at = ApiKey.objects.get(pk=new["id"]).expires_at
    assert expires_at <= timezone.now() + timedelta(days=10)


def test_a_shorter_expiry_may_be_asked_for(api, manager_token):
    new = rotate(api, manager_token, expires_in=3600).json()
    assert ApiKey.objects.get(pk=new["id"]).expires_at <= timezone.now() + timedelta(hours=1)


def test_rotation_is_audited_with_who_did_it(api, manager_token):
    new = rotate(api, manager_token).json()
    event = AuditEvent.objects.get(action="rotate")
    assert event.key_id == new["id"]
    assert event.actor.startswith("key:")
    assert new["token"] not in repr(event.__dict__)


@pytest.mark.parametrize(
    "body",
    [
        {"expires_in": 0},
        {"expires_in": "forever"},
        {"expires_in": 10**30},
        {"ref_pattern": "refs/(.*"},
        {"ref_pattern": "refs/heads/[abc]"},
        {"ref_pattern": "refs/heads/\nmain"},
        {"ref_pattern": "r" * 256},
        {"ref_pattern": ["refs/*"]},
    ],
)
def test_bad_rotation_input_is_400_and_rotates_nothing(api, manager_token, body):
    response = rotate(api, manager_token, **body)
    assert response.status_code == 400, response.content
    assert not AuditEvent.objects.filter(action="rotate").exists()


def test_a_project_key_without_tokens_manage_cannot_rotate(api, deploying, project_token):
    response = rotate(api, project_token)
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"


def test_another_projects_manager_key_sees_no_project(api, deploying):
    other = make_project_key(make_project(slug="other", deploy_tokens_enabled=True), MANAGE)
    assert rotate(api, other).status_code == 404


def test_a_project_without_deploy_tokens_answers_409(api, project):
    response = rotate(api, make_project_key(project, MANAGE))
    assert response.status_code == 409
    assert response.json()["code"] == "deploy_tokens_disabled"


def test_a_deploy_token_cannot_rotate_itself(api, manager_token):
    token = create_build(api, manager_token)["deploy_token"]["token"]
    assert rotate(api, token).status_code == 403


def staff_client(*, is_staff: bool, csrf: bool = False) -> Api:
    user = get_user_model().objects.create_user(
        username=f"u{is_staff}", password="correct horse battery staple", is_staff=is_staff
    )
    client = Api(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def test_a_staff_user_signed_in_to_the_admin_can_rotate(deploying):
    response = staff_client(is_staff=True).post("/api/v1/projects/app/deploy-tokens/rotate")
    assert response.status_code == 201
    assert AuditEvent.objects.get(action="rotate").actor == "user:uTrue"


def test_a_signed_in_user_who_is_not_staff_cannot_rotate(deploying):
    response = staff_client(is_staff=False).post("/api/v1/projects/app/deploy-tokens/rotate")
    assert response.status_code == 403
    assert response.json()["code"] == "staff_only"


def test_session_rotation_needs_the_csrf_token(deploying):
    client = staff_client(is_staff=True, csrf=True)
    response = client.post("/api/v1/projects/app/deploy-tokens/rotate")
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="rotate").exists()


def test_a_session_opens_no_other_endpoint(api, build):
    client = staff_client(is_staff=True)
    assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 401


def revoke(api, manager_token, key_id) -> None:
    """Revoke a deploy token the way a project manager does: a key with tokens:manage."""
    assert api.as_key(manager_token).delete(f"/api/v1/keys/{key_id}").status_code == 204


def test_revoking_the_new_token_and_rotating_again_mints_a_fresh_one(api, manager_token):
    build = create_build(api, manager_token)
    old = build["deploy_token"]
    leaked = rotate(api, manager_token, ref_pattern="refs/tags/*").json()
    revoke(api, manager_token, leaked["id"])

    response = rotate(api, manager_token)
    assert response.status_code == 201, response.content
    fresh = response.json()
    assert fresh["token"] not in (old["token"], leaked["token"])
    assert fresh["ref_pattern"] == "refs/tags/*"  # the revoked token's restriction is kept
    assert fresh["previous"] is None  # the revoked token keeps working for no grace period
    assert ApiKey.objects.get(pk=fresh["id"]).replaces_id == leaked["id"]
    tag = create_build(api, manager_token, ref="refs/tags/v1")
    assert reads(api, fresh["token"], tag["id"]) == 200
    assert reads(api, leaked["token"], tag["id"]) == 401
    assert reads(api, old["token"], build["id"]) == 200  # still inside its grace period


def test_after_the_new_token_is_revoked_new_builds_get_neither_it_nor_the_retiring_one(
    api, manager_token
):
    old = create_build(api, manager_token)["deploy_token"]
    new = rotate(api, manager_token).json()
    revoke(api, manager_token, new["id"])

    handed = create_build(api, manager_token)["deploy_token"]
    assert handed["id"] not in (old["id"], new["id"])
    assert reads(api, handed["token"], create_build(api, manager_token)["id"]) == 200
    assert create_build(api, manager_token)["deploy_token"]["id"] == handed["id"]
    assert rotate(api, manager_token).status_code == 201


def test_a_retry_asking_for_other_parameters_is_a_conflict_not_the_earlier_token(
    api, manager_token
):
    first = rotate(api, manager_token).json()
    response = rotate(api, manager_token, ref_pattern="refs/tags/*", expires_in=60)
    assert response.status_code == 409, response.content
    assert response.json()["code"] == "rotation_parameters_differ"
    assert f"revoke key {first['id']}" in response.json()["detail"]
    assert "token" not in response.json()
    assert ApiKey.objects.get(pk=first["id"]).ref_pattern == ""
    assert AuditEvent.objects.filter(action="rotate").count() == 1


@pytest.mark.parametrize(
    "retry",
    [
        {},
        {"ref_pattern": "refs/tags/*"},
        {"expires_in": 3600},
        {"ref_pattern": "refs/tags/*", "expires_in": 3600},
    ],
)
def test_a_retry_repeating_or_omitting_the_parameters_is_answered_the_same_token(
    api, manager_token, retry
):
    first = rotate(api, manager_token, ref_pattern="refs/tags/*", expires_in=3600).json()
    response = rotate(api, manager_token, **retry)
    assert response.status_code == 200, response.content
    assert response.json() == first


@pytest.mark.parametrize("retry", [{"ref_pattern": ""}, {"expires_in": 3599}])
def test_a_retry_changing_one_parameter_is_a_conflict(api, manager_token, retry):
    rotate(api, manager_token, ref_pattern="refs/tags/*", expires_in=3600)
    assert rotate(api, manager_token, **retry).status_code == 409


def test_revoking_the_new_token_lets_a_rotation_with_other_parameters_through(api, manager_token):
    first = rotate(api, manager_token).json()
    revoke(api, manager_token, first["id"])
    response = rotate(api, manager_token, ref_pattern="refs/tags/*", expires_in=60)
    assert response.status_code == 201
    assert response.json()["ref_pattern"] == "refs/tags/*"


def opt(project, enabled: bool) -> None:
    type(project).objects.filter(pk=project.pk).update(deploy_tokens_enabled=enabled)


def test_opting_out_switches_existing_deploy_tokens_off_until_opting_back_in(
    api, deploying, manager_token
):
    build = create_build(api, manager_token)
    token = build["deploy_token"]["token"]
    opt(deploying, False)

    response = api.as_key(token).get(f"/api/v1/builds/{build['id']}/")
    assert response.status_code == 403
    assert response.json()["code"] == "deploy_tokens_disabled"
    me = api.as_key(token).get("/api/v1/keys/self").json()
    assert me["scopes"] == []

    opt(deploying, True)
    assert reads(api, token, build["id"]) == 200
    assert api.as_key(token).get("/api/v1/keys/self").json()["scopes"] == ["artifacts:read"]


def test_opting_back_in_does_not_revive_a_revoked_or_expired_deploy_token(
    api, deploying, manager_token
):
    build = create_build(api, manager_token)
    revoked = build["deploy_token"]
    expired = rotate(api, manager_token).json()
    revoke(api, manager_token, revoked["id"])
    ApiKey.objects.filter(pk=expired["id"]).update(expires_at=timezone.now())
    opt(deploying, False)
    opt(deploying, True)
    assert reads(api, revoked["token"], build["id"]) == 401
    assert reads(api, expired["token"], build["id"]) == 401


def test_a_key_derived_from_a_deploy_token_is_switched_off_with_it(
    api, deploying, manager_token, settings
):
    """Deploy tokens cannot mint today; if a descendant exists, it is switched off with its root."""
    build = create_build(api, manager_token)
    root = ApiKey.objects.get(pk=build["deploy_token"]["id"])
    token = crypto.token_generate("derived")
    ApiKey.objects.create(
        kind="derived",
        project=root.project,
        parent=root,
        lineage=root.subtree_lineage,
        scopes=["artifacts:read"],
        digest=crypto.token_digest(token, pepper=settings.TOKEN_PEPPER),
        expires_at=root.expires_at,
    )
    assert reads(api, token, build["id"]) == 200
    opt(deploying, False)
    assert reads(api, token, build["id"]) == 403


def test_opting_out_leaves_build_and_project_keys_alone(api, deploying, manager_token):
    build = create_build(api, manager_token)
    opt(deploying, False)
    assert reads(api, build["key"]["token"], build["id"]) == 200
    assert create_build(api, manager_token).get("deploy_token") is None
