"""A refusal storm by a live key adds a bounded number of bounded audit rows, and the
tripwire still counts every write attempt."""

import json

import pytest

from devtools.factories import make_build
from tokens.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.TRIPWIRE_WRITE_DENIALS = 5
    settings.TRIPWIRE_WINDOW_SECONDS = 3600
    settings.AUDIT_REFUSALS_PER_WINDOW = 20
    settings.AUDIT_DETAIL_MAX_CHARS = 512


def detail_sizes() -> list[int]:
    return [len(json.dumps(e.detail)) for e in AuditEvent.objects.all()]


def test_forty_refused_mints_by_an_untrusted_build_add_at_most_the_cap(api, project):
    fork = make_build(project, ref="refs/pull/1/head", trusted=False)
    client = api.as_key(fork.token)
    for _ in range(40):
        response = client.post("/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json")
        assert response.status_code == 403
        assert response.json()["code"] == "untrusted_build"
    rows = AuditEvent.objects.filter(action="denied", key=fork.key)
    assert rows.count() == 20
    assert rows.first().detail["repeats"] == 20  # the storm is counted, not dropped


def test_forty_refusals_inside_key_derive_add_at_most_the_cap(api, build):
    client = api.as_key(build.token)
    for _ in range(40):
        response = client.post(
            "/api/v1/keys/", {"scopes": ["artifacts:read"], "expires_in": 10**9}, format="json"
        )
        assert response.status_code == 403
        assert response.json()["code"] == "expiry_too_long"
    assert AuditEvent.objects.filter(action="denied", key=build.key).count() == 20


def test_refusals_on_a_huge_path_keep_every_row_small(api, build, project_token):
    path = "/".join(["a" * 200] * 18)  # 3.6 KB
    client = api.as_key(project_token)
    for _ in range(40):
        response = client.get(f"/api/v1/builds/{build.build.pk}/artifacts/{path}")
        assert response.status_code == 403
    assert AuditEvent.objects.filter(action="denied").count() == 20
    assert max(detail_sizes()) < 1024
    stored = AuditEvent.objects.filter(action="denied").first().detail["path"]
    assert stored.startswith(f"/api/v1/builds/{build.build.pk}/artifacts/aaaa")
    assert stored.endswith(
        f"({len(path) + len(f'/api/v1/builds/{build.build.pk}/artifacts/')} characters)"
    )


def test_the_tripwire_counts_correctly_when_the_cap_is_set_below_it(api, build, settings):
    settings.AUDIT_REFUSALS_PER_WINDOW = 1
    derived = api.as_key(build.token).post(
        "/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json"
    )
    client = api.as_key(derived.json()["token"])
    for attempt in range(4):
        response = client.put(
            f"/api/v1/builds/{build.build.pk}/artifacts/x", b"x", content_type="text/plain"
        )
        assert response.status_code == 403, attempt
        assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 200
    client.put(f"/api/v1/builds/{build.build.pk}/artifacts/x", b"x", content_type="text/plain")
    assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 401
