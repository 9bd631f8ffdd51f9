"""Every JSON endpoint answers hostile JSON with a 4xx in the API's error shape, and nothing
changes: no build, no key, no finished build."""

import json

import pytest
from django.db import DataError, transaction

from builds.models import Build
from devtools.factories import make_project_key
from tokens.models import ApiKey
from tokens.scopes import Scope

pytestmark = pytest.mark.django_db

DEEP = "[" * 100_000 + "]" * 100_000
# Deep enough to pass CPython's decoder, too deep for any recursive walk after it.
METADATA_400_DEEP = '{"ref": "refs/heads/main", "commit": "abc", "metadata": {"a": %s}}' % (
    "[" * 400 + "]" * 400
)


@pytest.fixture
def endpoints(project, build):
    """(url, token) for each JSON endpoint that writes."""
    manager = make_project_key(project, scopes=(Scope.TOKENS_MANAGE,))
    creator = make_project_key(project)
    return {
        "build-create": ("/api/v1/projects/app/builds/", creator),
        "build-finish": (f"/api/v1/builds/{build.build.pk}/finish", build.token),
        "key-derive": ("/api/v1/keys/", build.token),
        "deploy-token-rotate": ("/api/v1/projects/app/deploy-tokens/rotate", manager),
    }


def state(project):
    return (
        Build.objects.count(),
        ApiKey.objects.count(),
        list(Build.objects.values_list("state", flat=True)),
    )


HOSTILE = {
    "nested 100000 deep": (DEEP, "json_too_deep"),
    "nested 400 deep in metadata": (METADATA_400_DEEP, "json_too_deep"),
    "object 33 deep": ('{"a":' * 33 + "1" + "}" * 33, "json_too_deep"),
    "lone surrogate value": ('{"state": "\\ud800", "name": "\\ud800"}', "invalid_unicode"),
    "lone surrogate key": ('{"\\udfff": 1}', "invalid_unicode"),
    "lone surrogate in metadata": (
        '{"ref": "r", "commit": "ab", "metadata": {"k": ["\\ud800"]}}',
        "invalid_unicode",
    ),
    "surrogate ref": (
        '{"ref": "\\udbff", "commit": "ab", "path_prefix": "\\udbff/"}',
        "invalid_unicode",
    ),
    "invalid utf-8": (b'{"ref": "\xff\xfe", "state": "\xff"}', "parse_error"),
}


@pytest.mark.parametrize(
    "endpoint", ["build-create", "build-finish", "key-derive", "deploy-token-rotate"]
)
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_json_is_a_clean_400_and_changes_nothing(api, project, endpoints, endpoint, name):
    body, code = HOSTILE[name]
    url, token = endpoints[endpoint]
    project.deploy_tokens_enabled = True
    project.save()
    before = state(project)
    response = api.as_key(token).post(url, body, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()
    assert error["code"] == code
    assert error["detail"]
    assert state(project) == before


def test_json_within_the_depth_limit_is_accepted(api, project, endpoints):
    url, token = endpoints["build-create"]
    metadata = json.loads('{"a":' * 30 + "1" + "}" * 30)
    response = api.as_key(token).post(
        url, {"ref": "r", "commit": "ab", "metadata": metadata}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["metadata"] == metadata


def test_a_stored_lone_surrogate_still_renders(api, build):
    """Rows written before input was checked must not 500 on every read."""
    Build.objects.filter(pk=build.build.pk).update(metadata={"k": "ok"})
    build_row = Build.objects.get(pk=build.build.pk)
    build_row.metadata = {"k": "\ud800"}
    try:
        with transaction.atomic():
            build_row.save(update_fields=["metadata"])
    except DataError:  # PostgreSQL refuses the row itself: nothing to render
        pytest.skip("this database cannot store a lone surrogate")
    response = api.as_key(build.token).get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 200
    assert json.loads(response.content)["metadata"] == {"k": "\ud800"}


@pytest.mark.parametrize(
    "metadata",
    ['{"k": "\\ud800"}', '{"\\udfff": 1}', "[" * 40 + "]" * 40],
    ids=["surrogate value", "surrogate key", "40 deep"],
)
def test_the_admin_refuses_metadata_the_api_would_refuse(admin_client, build, metadata):
    url = f"/admin/builds/build/{build.build.pk}/change/"
    response = admin_client.post(
        url,
        {
            "ref": "refs/heads/main",
            "commit": "a" * 40,
            "trusted": "on",
            "metadata": metadata,
            "statuses-TOTAL_FORMS": "0",
            "statuses-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200  # the form again, with the error
    assert "errorlist" in response.content.decode()
    assert Build.objects.get(pk=build.build.pk).metadata == {}
    assert admin_client.get(url).status_code == 200
