"""Build create reads JSON only, and a build always names its source (ref and commit)."""

import pytest

from builds.models import Build
from tokens.models import ApiKey

pytestmark = pytest.mark.django_db

URL = "/api/v1/projects/app/builds/"


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/x-www-form-urlencoded", "ref=refs%2Fheads%2Fmain&commit=abc"),
        ("application/x-www-form-urlencoded", '{"ref": "refs/heads/main", "commit": "abc"}'),
        (
            "multipart/form-data; boundary=x",
            '--x\r\nContent-Disposition: form-data; name="ref"\r\n\r\nmain\r\n--x--\r\n',
        ),
        ("text/plain", '{"ref": "refs/heads/main", "commit": "abc"}'),
        ("", '{"ref": "refs/heads/main", "commit": "abc"}'),
    ],
    ids=["form", "json-as-form", "multipart", "text", "none"],
)
def test_a_body_that_is_not_json_is_415(api, project, project_token, content_type, body):
    response = api.as_key(project_token).generic("POST", URL, body, content_type=content_type)
    assert response.status_code == 415, response.content
    assert response.json()["code"] == "unsupported_media_type"
    assert not Build.objects.exists()


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "ref"),
        ({"commit": "abc"}, "ref"),
        ({"ref": "refs/heads/main"}, "commit"),
        ({"ref": "", "commit": "abc"}, "ref"),
        ({"ref": "refs/heads/main", "commit": ""}, "commit"),
        ({"ref": None, "commit": "abc"}, "ref"),
    ],
)
def test_ref_and_commit_are_required(api, project, project_token, body, field):
    keys = ApiKey.objects.count()
    response = api.as_key(project_token).post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not Build.objects.exists()
    assert ApiKey.objects.count() == keys


def test_an_empty_body_is_400_naming_the_required_fields(api, project, project_token):
    response = api.as_key(project_token).post(URL, content_type="application/json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) >= {"ref", "commit"}
