"""Sharing through the HTTP API and the signed /dl/ links it hands out (in-process client)."""

import html
import re
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from builds.services import build_finish
from devtools.factories import make_build, make_project
from tokens.models import ApiKey, AuditEvent
from tokens.services import deploy_token_current, key_derive

from .conftest import body_of, sha256, upload

pytestmark = pytest.mark.django_db
FILES = {
    "dist/app.tar.gz": b"app bytes" * 100,
    "dist/lib.so": b"lib",
    "logs/build.log": b"log",
}


@pytest.fixture
def stocked(api, build):
    for path, data in FILES.items():
        assert upload(api, build.token, build.build.pk, path, data).status_code == 201
    return build


def share(api, token, build_id, **body):
    return api.as_key(token).post(f"/api/v1/builds/{build_id}/share", body, format="json")


def fetch(url: str, method="get", **headers):
    """A signed link fetched with no credential, as curl would."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    response = getattr(Client(), method)(target, **headers)
    response.body = body_of(response)
    return response


def altered(url: str, **params) -> str:
    parts = urlsplit(url)
    query = {**dict(parse_qsl(parts.query)), **params}
    return parts._replace(query=urlencode(query)).geturl()


def test_a_share_answers_signed_links_that_need_no_credential(api, stocked):
    response = share(api, stocked.token, stocked.build.pk, prefix="dist/", expires_in=600)
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"url", "expires_at", "key_id", "build", "artifacts"}
    assert body["build"]["id"] == stocked.build.pk and body["build"]["project"] == "app"
    assert [a["path"] for a in body["artifacts"]] == ["dist/app.tar.gz", "dist/lib.so"]
    for item in body["artifacts"]:
        got = fetch(item["url"])
        assert got.status_code == 200
        assert got.body == FILES[item["path"]]
        assert sha256(got.body) == item["sha256"] == got["X-Checksum-Sha256"]
        assert got["Referrer-Policy"] == "no-referrer"
        assert "noindex" in got["X-Robots-Tag"] and "private" in got["Cache-Control"]
    listing = fetch(body["url"], HTTP_ACCEPT="application/json")
    assert listing.status_code == 200 and listing.json()["artifacts"] == body["artifacts"]
    assert listing.json()["key_id"] == body["key_id"]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.SHARE, key_id=body["key_id"])


def test_head_and_ranges_work_on_a_signed_link(api, stocked):
    url = share(api, stocked.token, stocked.build.pk, expires_in=60).json()["artifacts"][0]["url"]
    head = fetch(url, "head")
    assert head.status_code == 200 and head.body == b""
    assert head["Content-Length"] == str(len(FILES["dist/app.tar.gz"]))
    part = fetch(url, HTTP_RANGE="bytes=3-8")
    assert part.status_code == 206 and part.body == FILES["dist/app.tar.gz"][3:9]
    cached = fetch(url, HTTP_IF_NONE_MATCH=head["ETag"])
    assert cached.status_code == 304 and cached.body == b""


@pytest.mark.parametrize(
    "damage, code",
    [
        (lambda u: u.replace("/dist/app.tar.gz", "/dist/lib.so"), "bad_signature"),
        (
            lambda u: altered(u, exp=str(int(dict(parse_qsl(urlsplit(u).query))["exp"]) + 9)),
            "bad_signature",
        ),
        (lambda u: altered(u, kid="1"), "bad_signature"),
        (lambda u: altered(u, sig="A" * 43), "bad_signature"),
        (lambda u: u.split("?")[0], "malformed_link"),
    ],
    ids=["path", "exp", "kid", "sig", "unsigned"],
)
def test_a_tampered_link_is_403_with_the_reason_and_never_the_bytes(api, stocked, damage, code):
    body = share(api, stocked.token, stocked.build.pk, expires_in=60).json()
    response = fetch(damage(body["artifacts"][0]["url"]))
    assert response.status_code == 403
    assert response.json()["code"] == code and response.json()["detail"]
    assert FILES["dist/app.tar.gz"] not in response.body


def test_an_expired_link_is_403(api, stocked, monkeypatch):
    url = share(api, stocked.token, stocked.build.pk, expires_in=60).json()["artifacts"][0]["url"]
    import time as time_module

    later = time_module.time() + 61
    monkeypatch.setattr("artifacts.share_views.time.time", lambda: later)
    response = fetch(url)
    assert response.status_code == 403 and response.json()["code"] == "link_expired"


def test_revoking_the_share_key_withdraws_that_share_and_nothing_else(api, stocked):
    first = share(api, stocked.token, stocked.build.pk, expires_in=60).json()
    second = share(api, stocked.token, stocked.build.pk, expires_in=60).json()
    assert first["key_id"] != second["key_id"]
    revoked = api.as_key(stocked.token).delete(f"/api/v1/keys/{first['key_id']}")
    assert revoked.status_code == 204
    response = fetch(first["artifacts"][0]["url"])
    assert response.status_code == 403 and response.json()["code"] == "key_revoked"
    assert fetch(first["url"]).status_code == 403
    assert fetch(second["artifacts"][0]["url"]).status_code == 200
    assert ApiKey.objects.get(pk=stocked.key.pk).revoked_at is None


def test_revoking_an_ancestor_of_the_sharing_key_withdraws_its_shares(api, stocked):
    _middle, middle_token = key_derive(parent=stocked.key)
    body = share(api, middle_token, stocked.build.pk, expires_in=60).json()
    assert fetch(body["artifacts"][0]["url"]).status_code == 200
    # Only the ancestor is marked (as if the share was minted in a race with the cascade).
    ApiKey.objects.filter(pk=stocked.key.pk).update(revoked_at=timezone.now())
    response = fetch(body["artifacts"][0]["url"])
    assert response.status_code == 403 and response.json()["code"] == "ancestor_revoked"


def test_rotating_the_signing_secret_keeps_old_links_while_the_old_secret_is_listed(
    api, stocked, settings
):
    settings.SHARE_SIGNING_SECRETS = ["first-secret"]
    url = share(api, stocked.token, stocked.build.pk, expires_in=60).json()["artifacts"][0]["url"]
    settings.SHARE_SIGNING_SECRETS = ["second-secret", "first-secret"]
    assert fetch(url).status_code == 200
    fresh = share(api, stocked.token, stocked.build.pk, expires_in=60).json()["artifacts"][0]
    assert fetch(fresh["url"]).status_code == 200
    settings.SHARE_SIGNING_SECRETS = ["second-secret"]
    assert fetch(url).json()["code"] == "bad_signature"
    assert fetch(fresh["url"]).status_code == 200


def test_a_deleted_artifact_is_403_not_404(api, stocked):
    from artifacts.models import Artifact

    url = share(api, stocked.token, stocked.build.pk, expires_in=60).json()["artifacts"][0]["url"]
    Artifact.objects.filter(build=stocked.build, path="dist/app.tar.gz").delete()
    response = fetch(url)
    assert response.status_code == 403 and response.json()["code"] == "artifact_gone"


def test_a_prefix_limited_key_cannot_share_outside_its_prefix(api, stocked):
    limited, token = key_derive(parent=stocked.key, path_prefix="dist/")
    for body in [{"paths": ["logs/build.log"]}, {"prefix": "logs/"}]:
        response = share(api, token, stocked.build.pk, expires_in=60, **body)
        assert response.status_code == 403 and response.json()["code"] == "outside_prefix"
    denied = AuditEvent.objects.filter(key=limited, action=AuditEvent.Action.DENIED)
    assert denied.count() == 2
    inside = share(api, token, stocked.build.pk, expires_in=60).json()
    assert [a["path"] for a in inside["artifacts"]] == ["dist/app.tar.gz", "dist/lib.so"]
    listing = fetch(inside["url"], HTTP_ACCEPT="application/json").json()
    assert [a["path"] for a in listing["artifacts"]] == ["dist/app.tar.gz", "dist/lib.so"]


def test_a_path_list_share_lists_only_those_paths(api, stocked):
    body = share(api, stocked.token, stocked.build.pk, paths=["logs/build.log"], expires_in=60)
    listing = fetch(body.json()["url"], HTTP_ACCEPT="application/json").json()
    assert [a["path"] for a in listing["artifacts"]] == ["logs/build.log"]


def test_an_untrusted_builds_key_may_share_its_own_build(api, project):
    untrusted = make_build(project, trusted=False)
    upload(api, untrusted.token, untrusted.build.pk, "a.txt", b"fork")
    response = share(api, untrusted.token, untrusted.build.pk, expires_in=60)
    assert response.status_code == 201
    assert fetch(response.json()["artifacts"][0]["url"]).body == b"fork"


def test_a_deploy_token_shares_builds_its_ref_pattern_reaches(api):
    project = make_project(slug="cd", deploy_tokens_enabled=True)
    main = make_build(project, ref="refs/heads/main")
    upload(api, main.token, main.build.pk, "a.txt", b"main")
    build_finish(build=main.build, state="succeeded")
    _, token = deploy_token_current(project=project)
    response = share(api, token, main.build.pk, expires_in=60)
    assert response.status_code == 201
    assert fetch(response.json()["artifacts"][0]["url"]).body == b"main"


def test_a_share_never_outlives_the_sharer(api, stocked):
    _, token = key_derive(parent=stocked.key, expires_in=120)
    body = share(api, token, stocked.build.pk, expires_in=7 * 86400).json()
    minted = ApiKey.objects.get(pk=body["key_id"])
    assert (minted.expires_at - timezone.now()).total_seconds() <= 120


@pytest.mark.parametrize(
    "body",
    [
        {"expires_in": 7 * 86400 + 1},
        {"expires_in": 0},
        {"expires_in": "soon"},
        {"paths": "dist/app.tar.gz"},
        {"paths": ["dist/nope"]},
        {"paths": ["a\x00b"]},
        {"prefix": "../"},
        {"expire_in": 60},
    ],
)
def test_bad_share_bodies_are_400_and_mint_nothing(api, stocked, body):
    before = ApiKey.objects.count()
    response = share(api, stocked.token, stocked.build.pk, **body)
    assert response.status_code == 400, response.content
    assert ApiKey.objects.count() == before


def test_html_artifacts_are_downloads_with_a_sandbox(api, stocked):
    upload(
        api,
        stocked.token,
        stocked.build.pk,
        "report.html",
        b"<script>x</script>",
        content_type="text/html",
    )
    upload(api, stocked.token, stocked.build.pk, "shot.png", b"\x89PNG", content_type="image/png")
    links = share(api, stocked.token, stocked.build.pk, expires_in=60).json()["artifacts"]
    by_path = {a["path"]: a["url"] for a in links}
    html = fetch(by_path["report.html"])
    assert html["Content-Disposition"].startswith("attachment")
    assert html["Content-Security-Policy"] == "sandbox"
    assert html["X-Content-Type-Options"] == "nosniff"
    assert fetch(by_path["shot.png"])["Content-Disposition"].startswith("inline")


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        ("text/plain", "inline"),
        ("TEXT/PLAIN; charset=utf-8", "inline"),
        ("image/png", "inline"),
        # A browser reads the last type of a comma-separated list: HTML and SVG, not the first.
        ("text/plain; x=y, text/html", "attachment"),
        ("text/plain;a=b,text/html;charset=utf-8", "attachment"),
        ('image/png; q="1", image/svg+xml', "attachment"),
        ("text/plain; format=flowed, text/html", "attachment"),
        ("text/html; x=text/plain", "attachment"),
    ],
)
def test_only_a_content_type_naming_one_safe_type_is_shown_inline(api, build, content_type, shown):
    response = upload(
        api, build.token, build.build.pk, "page", b"<h1>hi", content_type=content_type
    )
    assert response.status_code == 201, response.content
    url = share(api, build.token, build.build.pk, expires_in=60).json()["artifacts"][0]["url"]
    answer = fetch(url)
    assert answer.status_code == 200
    assert answer["Content-Disposition"] == f'{shown}; filename="page"'
    assert answer["Content-Security-Policy"] == "sandbox"


def test_the_share_page_is_html_for_browsers_with_a_tight_policy(api, stocked):
    body = share(api, stocked.token, stocked.build.pk, expires_in=60).json()
    page = fetch(body["url"], HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    csp = page["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    text = page.body.decode()
    for item in body["artifacts"]:
        assert item["sha256"] in text
    assert "sha256sum -c" in text and "<script" not in text


def test_the_share_page_lists_each_directory_once(api, build):
    """Path order puts a subdirectory's files between its parent's ("dist/a", "dist/sub/b",
    "dist/z"): the page still groups each directory's files under one heading."""
    paths = ["dist/a.txt", "dist/sub/b.txt", "dist/z.txt", "dist-x/c.txt", "top.txt"]
    for path in paths:
        assert upload(api, build.token, build.build.pk, path, path.encode()).status_code == 201
    body = share(api, build.token, build.build.pk, expires_in=60).json()
    page = fetch(body["url"], HTTP_ACCEPT="text/html").body.decode()
    headings = re.findall(r'<tr class="dir"><th colspan="2">([^<]*?)/ <small>', page)
    assert (
        sorted(headings) == sorted(set(headings)) == ["(top level)", "dist", "dist-x", "dist/sub"]
    )
    for heading, names in [("dist", ["a.txt", "z.txt"]), ("dist/sub", ["b.txt"])]:
        section = page.split(f'<th colspan="2">{heading}/ <small>', 1)[1].split("</tbody>", 1)[0]
        assert re.findall(r'rel="noreferrer nofollow">([^<]*)</a>', section) == names


def test_the_share_pages_links_keep_a_base_url_path(api, stocked, settings):
    """Served under a path (a proxy maps https://ci.example/courier/ to the app's /): the page's
    links keep that path, and each works once the proxy has stripped it again."""
    settings.PUBLIC_BASE_URL = "https://ci.example/courier"
    body = share(api, stocked.token, stocked.build.pk, expires_in=60).json()
    assert body["url"].startswith("https://ci.example/courier/dl/builds/")
    page = fetch(body["url"].replace("/courier", "", 1), HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    hrefs = re.findall(r'<a href="([^"]+)"', page.body.decode())
    expected = [urlsplit(a["url"]) for a in body["artifacts"]]
    assert [html.unescape(h) for h in hrefs] == [f"{u.path}?{u.query}" for u in expected]
    for href, item in zip(hrefs, body["artifacts"], strict=True):
        got = fetch(html.unescape(href).removeprefix("/courier"))
        assert got.status_code == 200 and got.body == FILES[item["path"]]


def test_other_methods_are_refused(api, stocked):
    url = share(api, stocked.token, stocked.build.pk, expires_in=60).json()["artifacts"][0]["url"]
    parts = urlsplit(url)
    response = Client().post(f"{parts.path}?{parts.query}")
    assert response.status_code == 403


def test_no_log_record_carries_a_signature(api, stocked, caplog):
    caplog.set_level("DEBUG")
    body = share(api, stocked.token, stocked.build.pk, expires_in=60).json()
    url = body["artifacts"][0]["url"]
    signature = dict(parse_qsl(urlsplit(url).query))["sig"]
    fetch(url)
    fetch(altered(url, kid="999999"))  # a refusal, logged by Django as a 403
    fetch(body["url"].replace("/dl/", "/dl/nothing/"))  # a 404
    assert caplog.records, "the refusals were logged"
    for record in caplog.records:
        assert signature not in record.getMessage()
        assert "sig=" not in record.getMessage()


def test_a_deploy_tokens_shares_stop_when_the_project_opts_out(api):
    project = make_project(slug="cd2", deploy_tokens_enabled=True)
    main = make_build(project, ref="refs/heads/main")
    upload(api, main.token, main.build.pk, "a.txt", b"main")
    _, token = deploy_token_current(project=project)
    url = share(api, token, main.build.pk, expires_in=60).json()["artifacts"][0]["url"]
    assert fetch(url).status_code == 200
    project.deploy_tokens_enabled = False
    project.save()
    response = fetch(url)
    assert response.status_code == 403 and response.json()["code"] == "deploy_tokens_disabled"
