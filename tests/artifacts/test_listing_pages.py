"""Artifact listings page by key (the path), not by offset: clients follow ``next``."""

from urllib.parse import quote, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from artifacts.models import Artifact, Blob
from tokens import services as token_services
from tokens.scopes import Scope

from .conftest import artifact_url, upload

pytestmark = pytest.mark.django_db


def walk(client, url: str, **params) -> tuple[list[str], int]:
    """Follow ``next`` from the first page; the paths in order and how many pages."""
    paths, pages = [], 0
    response = client.get(url, params)
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"next", "previous", "results"}
        paths += [a["path"] for a in body["results"]]
        pages += 1
        if body["next"] is None:
            return paths, pages
        response = client.get(body["next"])


def test_following_next_lists_every_artifact_once_in_path_order(api, build):
    names = ["b", "a/1", "a/2", "ä", "c.txt", "Z"]
    for name in names:
        assert upload(api, build.token, build.build.pk, name, name.encode()).status_code == 201
    client = api.as_key(build.token)

    paths, pages = walk(client, artifact_url(build.build.pk), page_size=2)

    assert sorted(paths) == sorted(names) and len(set(paths)) == len(names)
    in_database_order = Artifact.objects.filter(build=build.build).order_by("path")
    assert paths == list(in_database_order.values_list("path", flat=True))
    assert pages == 3


def test_previous_goes_back_a_page(api, build):
    for name in ["a", "b", "c", "d"]:
        upload(api, build.token, build.build.pk, name, name.encode())
    client = api.as_key(build.token)
    first = client.get(artifact_url(build.build.pk), {"page_size": 2}).json()
    second = client.get(first["next"]).json()
    assert [a["path"] for a in second["results"]] == ["c", "d"]
    back = client.get(second["previous"]).json()
    assert [a["path"] for a in back["results"]] == ["a", "b"]


def test_pages_keep_to_the_prefix_and_to_the_keys_path_prefix(api, build):
    for name in ["dist/a", "dist/b", "dist/c", "docs/x", "distant"]:
        upload(api, build.token, build.build.pk, name, name.encode())
    _, token = token_services.key_derive(
        parent=build.key, scopes=[Scope.ARTIFACTS_READ], path_prefix="dist"
    )
    client = api.as_key(token)
    paths, _ = walk(client, artifact_url(build.build.pk), page_size=1)
    assert paths == ["dist/a", "dist/b", "dist/c"]
    owner = api.as_key(build.token)
    paths, _ = walk(owner, artifact_url(build.build.pk), prefix="dist", page_size=2)
    assert paths == ["dist/a", "dist/b", "dist/c", "distant"]


def test_a_forged_cursor_is_refused(api, build):
    response = api.as_key(build.token).get(artifact_url(build.build.pk), {"cursor": "%%%garbage"})
    assert response.status_code == 404


def test_a_late_page_is_a_keyset_query_without_offset_or_count(api, build):
    blob = Blob.objects.create(sha256="e" * 64, size=1, storage_name="blobs/seed")
    Artifact.objects.bulk_create(
        [Artifact(build=build.build, path=f"f/{i:05}", blob=blob) for i in range(2500)],
        batch_size=1000,
    )
    client = api.as_key(build.token)
    url = client.get(artifact_url(build.build.pk), {"page_size": 1000}).json()["next"]
    url = client.get(url).json()["next"]
    with CaptureQueriesContext(connection) as queries:
        last = client.get(url).json()
    assert [a["path"] for a in last["results"]][:1] == ["f/02000"]
    assert len(last["results"]) == 500 and last["next"] is None
    page = [q["sql"] for q in queries.captured_queries if "artifacts_artifact" in q["sql"]]
    assert len(page) == 1
    assert "OFFSET" not in page[0].upper() and "COUNT(" not in page[0].upper()


@pytest.mark.parametrize(
    "cursor",
    ["cD0lMDA=", "f0.a\x00b", "f0.../x", "f0.a//b", "r99999999999999999999.a", "x", "f0.a%41"],
    ids=["base64-nul", "nul", "dot-dot", "empty-segment", "huge-offset", "shape", "escape"],
)
def test_a_cursor_no_page_could_carry_is_refused_before_any_query(api, build, cursor):
    """A NUL reached the query, which PostgreSQL refuses (a 500)."""
    upload(api, build.token, build.build.pk, "a", b"a")
    response = api.as_key(build.token).get(artifact_url(build.build.pk), {"cursor": cursor})
    assert response.status_code == 404, response.content


# The longest links a listing can hand out: a path of 3000 bytes percent-encoded (the most any
# may take), of short segments (a '/' took 3 bytes in a query), listed under most of it.
LONGEST_PREFIX = "é" * 240 + "/" + "é" * 130 + "/" + "a/" * 300
LONGEST = LONGEST_PREFIX + "b" * 5 + "/" + "é" * 25
# gunicorn reads request lines of up to 4094 bytes: "GET <target> HTTP/1.1".
REQUEST_LINE_MAX = 4094


def test_every_page_link_fits_a_request_line(api, build, settings):
    assert len(quote(LONGEST + "1", safe="/")) <= settings.ARTIFACT_PATH_MAX_URL_BYTES
    for path in (LONGEST + "1", LONGEST + "2", LONGEST + "3"):
        assert upload(api, build.token, build.build.pk, path, b"x").status_code == 201
    client = api.as_key(build.token)
    first = client.get(artifact_url(build.build.pk), {"prefix": LONGEST_PREFIX, "page_size": 1})
    second = client.get(first.json()["next"]).json()
    assert [a["path"] for a in second["results"]] == [LONGEST + "2"]
    for url in (first.json()["next"], second["next"], second["previous"]):
        target = urlsplit(url)._replace(scheme="", netloc="").geturl()
        assert len(f"GET {target} HTTP/1.1") <= REQUEST_LINE_MAX
    back = client.get(second["previous"]).json()
    assert [a["path"] for a in back["results"]] == [LONGEST + "1"]
