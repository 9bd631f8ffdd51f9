"""Under /api/ every answer Django gives itself (no URL matched, a body too large, a Host not
allowed, an uncaught exception) keeps the API's ``{"detail", "code"}`` shape; the admin keeps
Django's pages."""

import json

import pytest

from builds.models import Build

pytestmark = pytest.mark.django_db


def api_error(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content[:200]
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["detail"]
    return body


def test_a_json_body_over_the_upload_limit_is_a_413_in_the_api_shape(api, project_token, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"ref": "r", "commit": "ab", "metadata": {"x": "a" * 20_000}})
    before = Build.objects.count()
    response = api.as_key(project_token).post(
        "/api/v1/projects/app/builds/", body, content_type="application/json"
    )
    assert response.status_code == 413
    assert api_error(response)["code"] == "request_too_large"
    assert Build.objects.count() == before


def test_an_unknown_api_url_is_a_404_in_the_api_shape(api, project_token):
    response = api.as_key(project_token).get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert api_error(response)["code"] == "not_found"


def test_a_host_not_allowed_is_a_400_in_the_api_shape(api, project_token):
    response = api.as_key(project_token).get("/api/v1/keys/self", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert api_error(response)["code"] == "bad_request"


def test_an_uncaught_error_is_a_500_in_the_api_shape(api, project_token, monkeypatch):
    from tokens import views

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views.KeySelfView, "get", boom)
    client = api.as_key(project_token)
    client.raise_request_exception = False
    response = client.get("/api/v1/keys/self")
    assert response.status_code == 500
    assert api_error(response)["code"] == "server_error"


def test_outside_the_api_django_pages_stay(client):
    response = client.get("/admin/no-such-page/")
    assert response.status_code in (302, 404)
    assert "application/json" not in response.get("Content-Type", "")
    response = client.get("/healthz", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert "application/json" not in response["Content-Type"]


@pytest.mark.parametrize(
    "endpoint, body",
    [
        ("finish", {"state": "x" * 100_000}),
        ("statuses", {"context": "c", "state": "s" * 100_000}),
        ("keys", {"scopes": ["s" * 10_000] * 200}),
        ("create", {"ref": "r", "commit": "ab", "metadata": {"k" * 100_000: "\ud800"}}),
    ],
)
def test_an_error_quoting_a_huge_value_stays_small(api, build, project_token, endpoint, body):
    url, token = {
        "finish": (f"/api/v1/builds/{build.build.pk}/finish", build.token),
        "statuses": (f"/api/v1/builds/{build.build.pk}/statuses/", build.token),
        "keys": ("/api/v1/keys/", build.token),
        "create": ("/api/v1/projects/app/builds/", project_token),
    }[endpoint]
    text = json.dumps(body)  # ASCII, the surrogate as its escape
    response = api.as_key(token).post(url, text, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"]
    assert len(response.content) < 30_000  # unbounded, these echo up to 2 MB
    assert Build.objects.get(pk=build.build.pk).state == "running"
