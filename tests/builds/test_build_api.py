import pytest

from builds.models import Build
from devtools.factories import make_build, make_project

pytestmark = pytest.mark.django_db


def create_build(api, project_token, slug="app", **body):
    return api.as_key(project_token).post(
        f"/api/v1/projects/{slug}/builds/",
        {"ref": "refs/heads/main", "commit": "c" * 40, "trusted": True, **body},
        format="json",
    )


def test_project_key_creates_build_and_gets_its_key_once(api, project, project_token):
    response = create_build(api, project_token)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["state"] == "running"
    assert body["number"] == 1
    assert body["project"] == "app"
    assert body["key"]["token"].startswith("acb_")
    assert "artifacts:write" in body["key"]["scopes"]
    assert "deploy_token" not in body
    assert "no-store" in response["Cache-Control"]  # the token must not sit in any cache
    detail = api.as_key(body["key"]["token"]).get(f"/api/v1/builds/{body['id']}/").json()
    assert "key" not in detail and body["key"]["token"] not in str(detail)


def test_build_numbers_are_sequential_per_project(api, project, project_token):
    numbers = [create_build(api, project_token).json()["number"] for _ in range(3)]
    assert numbers == [1, 2, 3]


def test_opted_in_project_hands_the_same_deploy_token_to_every_build(api, project, project_token):
    project.deploy_tokens_enabled = True
    project.save()
    first = create_build(api, project_token).json()["deploy_token"]
    second = create_build(api, project_token).json()["deploy_token"]
    assert first["token"].startswith("acd_")
    assert first == second
    scopes = api.as_key(first["token"]).get("/api/v1/keys/self").json()["scopes"]
    assert scopes == ["artifacts:read"]


def test_project_key_cannot_create_builds_in_another_project(api, project_token):
    make_project(slug="other")
    assert create_build(api, project_token, slug="other").status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({"commit": "not-a-sha!"}, "commit"),
        ({"trusted": "perhaps"}, "trusted"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"metadata": {"a": "nul\u0000here"}}, "metadata"),
        ({"metadata": {"nul\u0000key": 1}}, "metadata"),
        ({"metadata": {"big": "x" * 20000}}, "metadata"),
        ({"ref": "refs/heads/ma\nin"}, "ref"),
        ({"ref": "refs/\u0000"}, "ref"),
    ],
)
def test_bad_build_input_is_400_with_the_field_named(api, project, project_token, body, field):
    response = create_build(api, project_token, **body)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}:")
    assert field in response.json()["errors"]
    assert not Build.objects.exists()


def test_untrusted_build_never_gets_the_deploy_token(api, project, project_token):
    project.deploy_tokens_enabled = True
    project.save()
    assert "deploy_token" in create_build(api, project_token).json()
    body = create_build(api, project_token, trusted=False).json()
    assert "deploy_token" not in body
    assert body["trusted"] is False


def test_a_build_is_untrusted_unless_the_orchestrator_says_so(api, project, project_token):
    response = api.as_key(project_token).post(
        "/api/v1/projects/app/builds/",
        {"ref": "refs/pull/7/head", "commit": "abc"},
        format="json",
    )
    body = response.json()
    assert body["trusted"] is False
    assert "keys:mint" not in body["key"]["scopes"]


def test_build_key_reads_its_own_build(api, build):
    response = api.as_key(build.token).get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == build.build.pk
    assert body["artifact_count"] == 0 and body["total_size"] == 0 and body["statuses"] == []


def test_build_key_gets_404_for_another_build_of_its_project(api, build, other_build):
    response = api.as_key(build.token).get(f"/api/v1/builds/{other_build.build.pk}/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_build_key_gets_404_for_a_build_of_another_project(api, build, other_project_build):
    response = api.as_key(build.token).get(f"/api/v1/builds/{other_project_build.build.pk}/")
    assert response.status_code == 404


def test_project_key_cannot_read_builds(api, build, project_token):
    response = api.as_key(project_token).get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"
    assert "artifacts:read" in response.json()["detail"]


def test_no_key_is_401_with_a_bearer_challenge(api, build):
    response = api.get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "not_authenticated"


def test_finish_makes_the_build_key_read_only(api, build):
    client = api.as_key(build.token)
    url = f"/api/v1/builds/{build.build.pk}"
    response = client.post(f"{url}/finish", {"state": "succeeded"}, format="json")
    assert response.status_code == 200
    assert response.json()["state"] == "succeeded"
    assert response.json()["finished_at"]
    assert client.get(f"{url}/").status_code == 200
    me = client.get("/api/v1/keys/self").json()
    assert me["scopes"] == ["artifacts:read", "keys:mint"]
    assert me["state"] == "read-only"


def test_finishing_twice_is_409(api, build):
    client = api.as_key(build.token)
    url = f"/api/v1/builds/{build.build.pk}/finish"
    assert client.post(url, {"state": "failed"}, format="json").status_code == 200
    response = client.post(url, {"state": "succeeded"}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "build_finished"
    assert Build.objects.get(pk=build.build.pk).state == "failed"


@pytest.mark.parametrize("state", ["running", "done", "", None])
def test_finish_with_a_bad_state_is_400_and_the_build_keeps_running(api, build, state):
    response = api.as_key(build.token).post(
        f"/api/v1/builds/{build.build.pk}/finish", {"state": state}, format="json"
    )
    assert response.status_code == 400
    assert Build.objects.get(pk=build.build.pk).is_running


def test_build_key_cannot_finish_another_build(api, build, other_build):
    response = api.as_key(build.token).post(
        f"/api/v1/builds/{other_build.build.pk}/finish", {"state": "failed"}, format="json"
    )
    assert response.status_code == 404
    assert Build.objects.get(pk=other_build.build.pk).is_running


def test_untrusted_build_key_cannot_mint(api, project):
    created = make_build(project, trusted=False)
    scopes = api.as_key(created.token).get("/api/v1/keys/self").json()["scopes"]
    assert "keys:mint" not in scopes
    assert "artifacts:write" in scopes
