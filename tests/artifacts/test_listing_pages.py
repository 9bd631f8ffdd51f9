"""Artifact listings page by key (the path), not by offset: clients follow ``next``."""

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
