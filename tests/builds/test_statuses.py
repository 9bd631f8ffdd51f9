import json
from urllib.parse import urlsplit

import pytest
from django.test import Client

from builds.models import StatusCheck
from builds.services import build_finish
from tokens.models import AuditEvent
from tokens.scopes import Scope
from tokens.services import key_derive

pytestmark = pytest.mark.django_db


def statuses_url(build) -> str:
    return f"/api/v1/builds/{build.build.pk}/statuses/"


def report(api, token, build, **body):
    return api.as_key(token).post(
        statuses_url(build), {"context": "downstream/tests", "state": "pending", **body}, "json"
    )


@pytest.fixture
def status_token(build) -> str:
    """A key that can only report a status on ``build`` (what a webhook payload carries)."""
    return key_derive(parent=build.key, scopes=[Scope.BUILD_STATUS])[1]


def test_status_key_reports_on_a_finished_build_and_readers_see_the_latest_per_context(
    api, build, status_token
):
    build_finish(build=build.build, state="succeeded")
    assert report(api, status_token, build).status_code == 201
    response = report(
        api,
        status_token,
        build,
        state="success",
        description="42 tests passed",
        target_url="https://ci.example/run/7",
    )
    assert response.status_code == 201, response.content
    assert response.json()["state"] == "success"
    assert report(api, status_token, build, context="downstream/lint", state="failure").status_code
    listing = api.as_key(build.token).get(statuses_url(build)).json()
    assert listing["count"] == 2
    assert [(s["context"], s["state"]) for s in listing["results"]] == [
        ("downstream/lint", "failure"),
        ("downstream/tests", "success"),
    ]
    detail = api.as_key(build.token).get(f"/api/v1/builds/{build.build.pk}/").json()
    assert [s["state"] for s in detail["statuses"]] == ["failure", "success"]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.STATUS).count() == 3


def test_status_key_can_do_nothing_else(api, build, status_token):
    client = api.as_key(status_token)
    pk = build.build.pk
    refused = [
        client.get(statuses_url(build)),
        client.get(f"/api/v1/builds/{pk}/"),
        client.get(f"/api/v1/builds/{pk}/artifacts/"),
        client.put(f"/api/v1/builds/{pk}/artifacts/x.txt", b"x", content_type="text/plain"),
        client.post(f"/api/v1/builds/{pk}/finish", {"state": "failed"}, "json"),
        client.post("/api/v1/keys/", {"scopes": ["build:status"]}, "json"),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)


def test_status_key_of_one_build_cannot_report_on_another(api, build, other_build, status_token):
    assert report(api, status_token, other_build).status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({"state": "green"}, "state"),
        ({"context": ""}, "context"),
        ({"context": "   "}, "context"),
        ({"context": "a\nb"}, "context"),
        ({"context": "x" * 256}, "context"),
        ({"description": "x" * 1001}, "description"),
        ({"description": "nul\u0000"}, "description"),
        # Shown in terminals, logs and pages: no escape sequences, no bidi spoofing.
        ({"description": "\x1b[2J\x1b[31mall green"}, "description"),
        ({"description": "ok\rFAILED"}, "description"),
        ({"description": "ok \u202egnilia\u202c"}, "description"),
        ({"context": "ci/\u202etset"}, "context"),
        ({"context": "ci/\u200btests"}, "context"),
        ({"context": "ci/\x85tests"}, "context"),
        ({"target_url": "javascript:alert(1)"}, "target_url"),
        ({"target_url": "ftp://ci.example/x"}, "target_url"),
        ({"target_url": "data:text/html,<script>"}, "target_url"),
        ({"target_url": "not a url"}, "target_url"),
    ],
)
def test_bad_status_reports_are_400_and_store_nothing(api, build, status_token, body, field):
    response = report(api, status_token, build, **body)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not build.build.statuses.exists()


def test_unicode_context_and_description_round_trip(api, build, status_token):
    response = report(api, status_token, build, context="démo/テスト", description="✓ ok")
    assert response.status_code == 201
    listing = api.as_key(build.token).get(statuses_url(build)).json()
    assert listing["results"][0]["context"] == "démo/テスト"


def test_a_build_holds_a_bounded_number_of_contexts(api, build, status_token, settings):
    settings.STATUS_CONTEXTS_PER_BUILD = 3
    for i in range(3):
        assert report(api, status_token, build, context=f"c{i}").status_code == 201
    refused = report(api, status_token, build, context="c3")
    assert refused.status_code == 400 and refused.json()["code"] == "too_many"
    assert report(api, status_token, build, context="c1", state="success").status_code == 201
    listing = api.as_key(build.token).get(statuses_url(build)).json()
    assert [s["context"] for s in listing["results"]] == ["c0", "c1", "c2"]
    assert listing["results"][1]["state"] == "success"


def test_admin_shows_the_latest_status_per_context_escaped(api, build, status_token, admin_client):
    report(api, status_token, build, context="ci", state="failure", description="<b>x</b>")
    report(api, status_token, build, context="ci", state="success", description="<b>ok</b>")
    page = admin_client.get(f"/admin/builds/build/{build.build.pk}/change/").content.decode()
    assert "ci: <strong>success</strong> &lt;b&gt;ok&lt;/b&gt;" in page


def test_reports_in_one_context_keep_a_bounded_history(api, build, status_token, settings):
    # One context re-reported forever cannot grow the build's rows (and its admin page) forever.
    settings.STATUS_HISTORY_PER_CONTEXT = 3
    for i in range(6):
        assert report(api, status_token, build, description=f"run {i}").status_code == 201
    assert report(api, status_token, build, context="other").status_code == 201
    kept = StatusCheck.objects.filter(build=build.build)
    assert sorted(kept.values_list("description", flat=True)) == ["", "run 3", "run 4", "run 5"]
    listing = api.as_key(build.token).get(statuses_url(build)).json()
    assert [(s["context"], s["description"]) for s in listing["results"]] == [
        ("downstream/tests", "run 5"),
        ("other", ""),
    ]


def test_the_share_page_shows_every_context_however_busy_the_others_are(api, build, status_token):
    # A downstream reporting a lot in its own contexts cannot push another one's failure off the
    # share page: it shows the latest report of every context, not of the latest N reports.
    build_finish(build=build.build, state="succeeded")
    assert report(api, status_token, build, context="ci/security", state="failure").status_code
    StatusCheck.objects.bulk_create(
        StatusCheck(build=build.build, context=f"noise/{i % 25}", state="success")
        for i in range(500)  # 25 contexts x 20 reports: what the caps allow
    )
    shared = api.as_key(build.token).post(
        f"/api/v1/builds/{build.build.pk}/share", {"expires_in": 60}, format="json"
    )
    assert shared.status_code == 201, shared.content
    parts = urlsplit(shared.json()["url"])
    page = Client().get(f"{parts.path}?{parts.query}", HTTP_ACCEPT="text/html")
    text = b"".join(page.streaming_content) if page.streaming else page.content
    assert '<code>ci/security</code></td><td class="state-failure">' in text.decode()


@pytest.mark.parametrize("field", ["context", "description"])
def test_a_lone_surrogate_is_400(api, build, status_token, field):
    body = {"context": "ci", "state": "pending", field: "lone \\ud800 surrogate"}
    raw = json.dumps(body).replace("\\\\ud800", "\\ud800")  # the JSON escape, unpaired
    response = api.as_key(status_token).post(
        statuses_url(build), raw, content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert not build.build.statuses.exists()
