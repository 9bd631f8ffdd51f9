"""Signed listings come in pages: every request's cost is bounded by the page size, whatever the
build holds, and a page's cursor only says where it starts (it grants nothing)."""

import html
import re
import shlex
from urllib.parse import quote, urlsplit

import pytest

from .conftest import upload
from .test_share_http import altered, fetch, share

pytestmark = pytest.mark.django_db
PATHS = [f"out/{name}" for name in ("a.txt", "b.txt", "c/d.txt", "é.txt", "z.txt")]


@pytest.fixture
def stocked(api, build, settings):
    settings.SHARE_LISTING_PAGE_SIZE = 2
    for path in PATHS:
        assert upload(api, build.token, build.build.pk, path, path.encode()).status_code == 201
    return build


def pages(url: str) -> list[dict]:
    """Every page of a listing, following ``next`` as a client would."""
    found = []
    while url:
        response = fetch(url, HTTP_ACCEPT="application/json")
        assert response.status_code == 200, response.content
        found.append(response.json())
        url = found[-1]["next"]
    return found


def test_a_listing_is_read_page_by_page_through_next(api, stocked):
    body = share(api, stocked.token, stocked.build.pk, prefix="out/").json()
    read = pages(body["url"])
    assert [len(page["artifacts"]) for page in read] == [2, 2, 1]
    assert [a["path"] for page in read for a in page["artifacts"]] == sorted(PATHS)
    assert read[-1]["next"] is None
    # Every page's links work, and each page names the listing itself as its url.
    for page in read:
        assert page["url"] == body["url"]
        for item in page["artifacts"]:
            assert fetch(item["url"]).body == item["path"].encode()


def test_a_cursor_grants_nothing_beyond_the_signed_listing(api, stocked):
    body = share(api, stocked.token, stocked.build.pk, paths=[PATHS[1], PATHS[3]]).json()
    (only,) = pages(body["url"])
    assert [a["path"] for a in only["artifacts"]] == [PATHS[1], PATHS[3]]
    # A cursor placed anywhere positions the page within what was shared, and only there.
    positions = [("a", PATHS[1::2]), ("out/a.txt", PATHS[1::2]), ("out/b.txt", PATHS[3:4])]
    for cursor, shown in positions:
        moved = fetch(altered(body["url"], cursor=cursor), HTTP_ACCEPT="application/json")
        assert [a["path"] for a in moved.json()["artifacts"]] == shown
    wide = share(api, stocked.token, stocked.build.pk, prefix="out/").json()
    # Revoking the share withdraws every page.
    next_page = pages(wide["url"])[0]["next"]
    revoked = api.as_key(stocked.token).delete(f"/api/v1/keys/{wide['key_id']}")
    assert revoked.status_code == 204
    refused = fetch(next_page, HTTP_ACCEPT="application/json")
    assert refused.status_code == 403 and refused.json()["code"] == "key_revoked"


@pytest.mark.parametrize(
    "cursor",
    ["", "a.txt/", "../x", "a//b", "a\x00b", "\u202e.txt", "x" * 1100, "a%41"],
    ids=["empty", "a-dir", "dot-dot", "empty-segment", "nul", "control", "too-long", "escape"],
)
def test_a_damaged_cursor_is_a_clear_400(api, stocked, cursor):
    """No path could follow such a cursor: refused before any query (PostgreSQL refuses a NUL
    in any query: it was a 500)."""
    body = share(api, stocked.token, stocked.build.pk, prefix="out/").json()
    response = fetch(altered(body["url"], cursor=cursor), HTTP_ACCEPT="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_cursor"


def test_the_cursor_names_the_last_path_shown_relative_to_the_listing(api, stocked):
    body = share(api, stocked.token, stocked.build.pk, prefix="out/").json()
    next_url = pages(body["url"])[0]["next"]
    assert next_url == f"{body['url']}&cursor=b.txt"


# The longest links the service can be made to hand out: a path of 3000 bytes percent-encoded
# (the most any may take), under the longest prefix a share takes, nearly all of it.
LONGEST_PREFIX = "é" * 255 + "/" + "é" * 200 + "/"
LONGEST = LONGEST_PREFIX + "b" * 133 + "/" + "b" * 133
# gunicorn reads request lines of up to 4094 bytes: "GET <target> HTTP/1.1".
REQUEST_LINE_MAX = 4094


def test_every_link_of_a_listing_fits_a_request_line(api, build, settings):
    assert len(quote(LONGEST + "1", safe="/")) == settings.ARTIFACT_PATH_MAX_URL_BYTES
    settings.SHARE_LISTING_PAGE_SIZE = 1
    for path in (LONGEST + "1", LONGEST + "2"):
        assert upload(api, build.token, build.build.pk, path, b"x").status_code == 201
    body = share(api, build.token, build.build.pk, prefix=LONGEST_PREFIX).json()
    first = pages(body["url"])[0]
    for url in [body["url"], first["next"], *(a["url"] for a in first["artifacts"])]:
        target = urlsplit(url)._replace(scheme="", netloc="").geturl()
        assert len(f"GET {target} HTTP/1.1") <= REQUEST_LINE_MAX


def test_the_page_links_to_the_next_page_and_offers_a_command_for_every_page(api, stocked):
    body = share(api, stocked.token, stocked.build.pk, prefix="out/").json()
    first = fetch(body["url"], HTTP_ACCEPT="text/html")
    page = first.body.decode()
    assert first.status_code == 200 and "on this page" in page
    (href,) = re.findall(r'<a href="([^"]+)"[^>]*>Next page</a>', page)
    assert (
        html.unescape(href)
        == urlsplit(pages(body["url"])[0]["next"])._replace(scheme="", netloc="").geturl()
    )
    # One page's curl command would fetch part of the share: courier's, which follows every
    # page, is offered instead.
    assert "sha256sum -c" not in page
    command = f"courier download {shlex.quote(body['url'])} -o app-{stocked.build.number}"
    assert command in html.unescape(page)
    last = fetch(pages(body["url"])[1]["next"], HTTP_ACCEPT="text/html").body.decode()
    assert "Next page" not in last and "courier download" in last


def test_a_listing_within_one_page_keeps_its_single_command(api, stocked, settings):
    settings.SHARE_LISTING_PAGE_SIZE = 10
    body = share(api, stocked.token, stocked.build.pk, prefix="out/").json()
    page = fetch(body["url"], HTTP_ACCEPT="text/html").body.decode()
    assert "Next page" not in page and "on this page" not in page
    assert "sha256sum -c" in page and "courier download" not in page
    assert pages(body["url"])[0]["next"] is None
