import io

import pytest
from django.core.management import CommandError, call_command

from builds.models import Project
from tokens.models import ApiKey

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_project_prints_a_working_project_key_once(api):
    output = run("create_project", "shop", "--deploy-tokens")
    token = output.strip().splitlines()[-1]
    assert token.startswith("acp_")
    assert Project.objects.get(slug="shop").deploy_tokens_enabled
    response = api.as_key(token).post(
        "/api/v1/projects/shop/builds/",
        {"ref": "refs/heads/main", "commit": "abc", "trusted": True},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["deploy_token"]["token"].startswith("acd_")


def test_create_project_refuses_a_duplicate_slug():
    run("create_project", "shop")
    with pytest.raises(CommandError, match="already exists"):
        run("create_project", "shop")


def test_mint_project_key_with_extra_scopes(project):
    token = run("mint_project_key", "app", "--scope", "builds:create", "--scope", "webhooks:manage")
    key = ApiKey.objects.order_by("-id").first()
    assert key.kind == "project"
    assert key.scopes == ["builds:create", "webhooks:manage"]
    assert key.digest not in token


def test_mint_project_key_for_an_unknown_project_fails_clearly(db):
    with pytest.raises(CommandError, match="No project 'nope'"):
        run("mint_project_key", "nope")


def test_ensure_admin_creates_a_superuser_once(monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "correct horse battery staple")
    first = run("ensure_admin")
    assert "'admin'" in first and "ADMIN_PASSWORD" in first
    assert "correct horse battery staple" not in first  # the output may be a log file
    assert "existing superuser" in run("ensure_admin")


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "", "a long enough password 1")
    assert user.password.startswith("argon2")
    client.force_login(user)
    return client


def test_admin_lists_builds_and_keys_with_their_state(admin_client, build):
    client = admin_client
    assert (
        build.token
        not in client.get(f"/admin/tokens/apikey/{build.key.pk}/change/").content.decode()
    )
    keys = client.get("/admin/tokens/apikey/").content.decode()
    assert "app#1" in keys and "active" in keys
    builds = client.get("/admin/builds/build/").content.decode()
    assert "app#1" in builds and "running" in builds


def test_admin_revoke_action_revokes_the_key(admin_client, api, build):
    response = admin_client.post(
        "/admin/tokens/apikey/",
        {"action": "revoke_keys", "_selected_action": [build.key.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert api.as_key(build.token).get("/api/v1/keys/self").status_code == 401
