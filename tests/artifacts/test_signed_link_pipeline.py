"""Signed links take the lean request pipeline (artifactcourier/pipeline.py): they answer with
exactly the headers the full middleware chain gives them, in one query, and never touch the
admin's sessions or CSRF cookies."""

from urllib.parse import urlsplit

import pytest
from django.test import Client

from .conftest import body_of, upload

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def links(api, build, store):
    assert upload(api, build.token, build.build.pk, "dist/one.bin", b"x").status_code == 201
    assert upload(api, build.token, build.build.pk, "dist/page.html", b"<p>").status_code == 201
    response = api.as_key(build.token).post(
        f"/api/v1/builds/{build.build.pk}/share", {"expires_in": 600}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    return {"listing": body["url"], **{a["path"]: a["url"] for a in body["artifacts"]}}


def target(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def fetch(url: str, method: str = "get", **headers):
    response = getattr(Client(), method)(target(url), headers=headers)
    response.body = body_of(response)
    return response


def tampered(url: str) -> str:
    return url.replace("sig=", "sig=A")[: len(url)]


def requests(links):
    """Every kind of answer a signed link gives."""
    return {
        "artifact": (links["dist/one.bin"], "get", {}),
        "head": (links["dist/one.bin"], "head", {}),
        "html artifact": (links["dist/page.html"], "get", {}),
        "not modified": (links["dist/one.bin"], "get", {"If-None-Match": "*"}),
        "range": (links["dist/one.bin"], "get", {"Range": "bytes=0-0"}),
        "unsatisfiable": (links["dist/one.bin"], "get", {"Range": "bytes=5-"}),
        "listing html": (links["listing"], "get", {"Accept": "text/html"}),
        "listing json": (links["listing"], "get", {"Accept": "application/json"}),
        "tampered": (tampered(links["dist/one.bin"]), "get", {}),
        "wrong method": (links["dist/one.bin"], "post", {}),
    }


@pytest.mark.parametrize("mode", ["direct", "x-accel"])
def test_every_signed_link_answer_has_the_headers_of_the_full_chain(settings, links, mode):
    settings.SHARE_SERVE_MODE = mode
    lean = {name: fetch(url, method, **h) for name, (url, method, h) in requests(links).items()}
    settings.LEAN_PATH_PREFIXES = []  # every path through the whole MIDDLEWARE
    full = {name: fetch(url, method, **h) for name, (url, method, h) in requests(links).items()}
    for name in lean:
        assert lean[name].status_code == full[name].status_code, name
        assert dict(lean[name].headers) == dict(full[name].headers), name
        assert lean[name].body == full[name].body, name


def test_a_signed_artifact_keeps_its_security_headers_and_sets_no_cookie(links):
    response = fetch(links["dist/page.html"])
    assert response.status_code == 200 and response.body == b"<p>"
    assert response["Content-Disposition"] == 'attachment; filename="page.html"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "sandbox"
    assert response["Referrer-Policy"] == "no-referrer"
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert response["Cache-Control"] == "private, no-cache"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "Set-Cookie" not in response and not response.cookies
    assert "Vary" not in response


def test_a_refused_link_keeps_its_security_headers(links):
    response = fetch(tampered(links["dist/one.bin"]))
    assert response.status_code == 403
    assert response.json()["code"] == "bad_signature"
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "no-referrer"
    assert response["Cache-Control"] == "no-store"


def test_a_signed_download_is_one_query(links, django_assert_num_queries):
    fetch(links["dist/one.bin"])
    with django_assert_num_queries(1):
        response = fetch(links["dist/one.bin"])
    assert response.status_code == 200 and response.body == b"x"
