import os

import pytest

from artifacts.models import Artifact, Blob
from builds import services as build_services
from builds.models import Build
from devtools.factories import make_build, make_project

from .conftest import artifact_url, download, sha256, upload

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


@pytest.mark.parametrize("size", [0, 1, 5 * MiB + 3], ids=["empty", "one-byte", "5MiB"])
def test_uploaded_bytes_download_identically(api, build, store, size):
    data = os.urandom(size)
    response = upload(api, build.token, build.build.pk, "dist/app.bin", data)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["path"] == "dist/app.bin"
    assert body["size"] == size
    assert body["sha256"] == sha256(data)
    assert body["content_type"] == "application/octet-stream"

    got = download(api, build.token, build.build.pk, "dist/app.bin")
    assert got.status_code == 200
    assert got.body == data
    assert sha256(got.body) == got["X-Checksum-Sha256"] == sha256(data)
    assert got["Content-Length"] == str(size)
    assert got["ETag"] == f'"{sha256(data)}"'


def test_download_is_served_as_an_inert_attachment(api, build, store):
    upload(
        api,
        build.token,
        build.build.pk,
        "site/index.html",
        b"<script>alert(1)</script>",
        content_type="text/html",
    )
    got = download(api, build.token, build.build.pk, "site/index.html")
    assert got["Content-Disposition"] == 'attachment; filename="index.html"'
    assert got["X-Content-Type-Options"] == "nosniff"
    assert got["Content-Security-Policy"] == "sandbox"
    assert got["Content-Type"] == "text/html"


def test_head_answers_the_headers_without_the_bytes(api, build, store):
    data = os.urandom(1000)
    upload(api, build.token, build.build.pk, "a.bin", data)
    got = download(api, build.token, build.build.pk, "a.bin", method="head")
    assert got.status_code == 200
    assert got.body == b""
    assert got["Content-Length"] == "1000"
    assert got["X-Checksum-Sha256"] == sha256(data)


def test_matching_checksum_header_is_accepted(api, build, store):
    data = os.urandom(1000)
    response = upload(
        api, build.token, build.build.pk, "a.bin", data, headers={"X-Checksum-Sha256": sha256(data)}
    )
    assert response.status_code == 201


def test_checksum_mismatch_is_400_and_leaves_nothing(api, build, store):
    data = os.urandom(3 * MiB)
    response = upload(
        api, build.token, build.build.pk, "a.bin", data, headers={"X-Checksum-Sha256": "0" * 64}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "checksum_mismatch"
    assert api.as_key(build.token).get(artifact_url(build.build.pk)).json()["results"] == []
    assert download(api, build.token, build.build.pk, "a.bin").status_code == 404
    assert store.objects() == []
    assert store.pending_uploads() == []
    assert not Blob.objects.exists()


def test_malformed_checksum_header_is_400(api, build, store):
    response = upload(
        api, build.token, build.build.pk, "a.bin", b"x", headers={"X-Checksum-Sha256": "md5:abc"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_checksum"


def test_uploading_the_same_bytes_again_is_idempotent(api, build, store):
    data = os.urandom(2 * MiB)
    first = upload(api, build.token, build.build.pk, "a.bin", data)
    again = upload(api, build.token, build.build.pk, "a.bin", data)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(store.objects()) == 1


def test_different_bytes_at_an_existing_path_is_409_and_keeps_the_original(api, build, store):
    original = os.urandom(1000)
    upload(api, build.token, build.build.pk, "a.bin", original)
    response = upload(api, build.token, build.build.pk, "a.bin", os.urandom(1000))
    assert response.status_code == 409
    assert response.json()["code"] == "artifact_exists"
    assert download(api, build.token, build.build.pk, "a.bin").body == original
    assert len(store.objects()) == 1


def test_same_bytes_from_two_builds_are_stored_once(api, build, other_build, store):
    data = os.urandom(3 * MiB)
    assert upload(api, build.token, build.build.pk, "a.bin", data).status_code == 201
    assert upload(api, other_build.token, other_build.build.pk, "b.bin", data).status_code == 201
    assert len(store.objects()) == 1
    assert download(api, build.token, build.build.pk, "a.bin").body == data
    assert download(api, other_build.token, other_build.build.pk, "b.bin").body == data


def test_announced_checksum_of_stored_bytes_is_verified_not_rewritten(
    api, build, other_build, store
):
    data = os.urandom(1000)
    upload(api, build.token, build.build.pk, "a.bin", data)
    liar = upload(
        api,
        other_build.token,
        other_build.build.pk,
        "b.bin",
        os.urandom(1000),
        headers={"X-Checksum-Sha256": sha256(data)},
    )
    assert liar.status_code == 400
    honest = upload(
        api,
        other_build.token,
        other_build.build.pk,
        "b.bin",
        data,
        headers={"X-Checksum-Sha256": sha256(data)},
    )
    assert honest.status_code == 201
    assert len(store.objects()) == 1
    assert download(api, other_build.token, other_build.build.pk, "b.bin").body == data


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a/./b",
        "a//b",
        "a\\b",
        "a\x00b",
        "a%0Ab",  # a newline, percent-encoded (clients strip a raw one)
        "%2e%2e/x",
        "a\u202eb",
        "x" * 5000,
        ".",
        "..",
        "dir/",
    ],
    ids=repr,
)
def test_hostile_paths_are_refused_with_a_reason(api, build, path):
    response = upload(api, build.token, build.build.pk, path, b"data")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_path"
    assert "path" in response.json()["detail"]
    assert not Artifact.objects.exists()


@pytest.mark.parametrize("method", ["get", "head"])
@pytest.mark.parametrize("path", ["a\x00b", "a%00b", "a%0Ab", "a//b", "../x"], ids=repr)
def test_reading_a_path_no_upload_could_have_is_400_with_the_reason(api, build, method, path):
    upload(api, build.token, build.build.pk, "a/b", b"data")
    response = download(api, build.token, build.build.pk, path, method=method)
    assert response.status_code == 400
    if method == "get":
        assert response.json()["code"] == "invalid_path"
        assert "path" in response.json()["detail"]


def test_reading_an_invalid_path_of_an_unseen_build_is_still_404(api, build, other_build):
    assert download(api, other_build.token, build.build.pk, "a%00b").status_code == 404


@pytest.mark.parametrize("prefix", ["a\x00", "dist/\n", "\u202e"], ids=repr)
def test_listing_with_a_control_character_in_the_prefix_is_400(api, build, prefix):
    upload(api, build.token, build.build.pk, "a", b"data")
    response = api.as_key(build.token).get(artifact_url(build.build.pk), {"prefix": prefix})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_prefix"
    assert "control character" in response.json()["detail"]


def test_a_prefix_need_not_end_at_a_directory(api, build):
    upload(api, build.token, build.build.pk, "dist-1/a", b"data")
    listing = api.as_key(build.token).get(artifact_url(build.build.pk), {"prefix": "dist"})
    assert [a["path"] for a in listing.json()["results"]] == ["dist-1/a"]


def test_artifact_over_max_size_is_413_before_anything_is_stored(api, build, store, settings):
    settings.ARTIFACT_MAX_SIZE = MiB
    response = upload(api, build.token, build.build.pk, "big.bin", os.urandom(MiB + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "quota_exceeded"
    assert "at most 1048576 bytes" in response.json()["detail"]
    assert store.objects() == [] and store.pending_uploads() == []


def test_build_quota_counts_the_builds_earlier_artifacts(api, build, store, settings):
    settings.BUILD_ARTIFACTS_QUOTA = 1500
    assert upload(api, build.token, build.build.pk, "a", os.urandom(1000)).status_code == 201
    response = upload(api, build.token, build.build.pk, "b", os.urandom(1000))
    assert response.status_code == 413
    assert "build" in response.json()["detail"]
    assert len(store.objects()) == 1


def test_project_quota_spans_the_projects_builds(api, build, other_build, settings):
    settings.PROJECT_ARTIFACTS_QUOTA = 1500
    assert upload(api, build.token, build.build.pk, "a", os.urandom(1000)).status_code == 201
    response = upload(api, other_build.token, other_build.build.pk, "a", os.urandom(1000))
    assert response.status_code == 413
    assert "project" in response.json()["detail"]


@pytest.fixture
def ten_bytes(api, build, store):
    upload(api, build.token, build.build.pk, "ten.bin", b"0123456789")
    return lambda **headers: download(api, build.token, build.build.pk, "ten.bin", headers=headers)


@pytest.mark.parametrize(
    "header, content_range, body",
    [
        ("bytes=2-5", "bytes 2-5/10", b"2345"),
        ("bytes=7-", "bytes 7-9/10", b"789"),
        ("bytes=-3", "bytes 7-9/10", b"789"),
        ("bytes=8-100", "bytes 8-9/10", b"89"),
        ("bytes=0-0", "bytes 0-0/10", b"0"),
    ],
)
def test_a_single_range_is_206_with_those_bytes(ten_bytes, header, content_range, body):
    got = ten_bytes(Range=header)
    assert got.status_code == 206
    assert got["Content-Range"] == content_range
    assert got["Content-Length"] == str(len(body))
    assert got.body == body


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=20-30", "bytes=-0"])
def test_a_range_outside_the_file_is_416(ten_bytes, header):
    got = ten_bytes(Range=header)
    assert got.status_code == 416
    assert got["Content-Range"] == "bytes */10"


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "items=0-1", "bytes=5-2", "nonsense"])
def test_ranges_we_do_not_serve_are_ignored_and_the_whole_file_sent(ten_bytes, header):
    got = ten_bytes(Range=header)
    assert got.status_code == 200
    assert got.body == b"0123456789"


def test_range_with_a_stale_if_range_sends_the_whole_file(ten_bytes):
    got = ten_bytes(Range="bytes=2-5", **{"If-Range": '"stale"'})
    assert got.status_code == 200 and got.body == b"0123456789"


def test_if_none_match_with_the_etag_is_304(ten_bytes):
    etag = ten_bytes()["ETag"]
    assert etag == f'"{sha256(b"0123456789")}"'
    not_modified = ten_bytes(**{"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.body == b""
    assert not_modified["ETag"] == etag
    assert ten_bytes(**{"If-None-Match": '"other"'}).status_code == 200


def test_listing_is_paginated_and_filters_by_prefix(api, build, store):
    for path in ["dist/a.tar.gz", "dist/b.tar.gz", "logs/test.log"]:
        upload(api, build.token, build.build.pk, path, path.encode())
    client = api.as_key(build.token)
    listing = client.get(artifact_url(build.build.pk)).json()
    assert listing["next"] is None and len(listing["results"]) == 3
    assert [a["path"] for a in listing["results"]] == [
        "dist/a.tar.gz",
        "dist/b.tar.gz",
        "logs/test.log",
    ]
    assert listing["results"][0]["sha256"] == sha256(b"dist/a.tar.gz")
    dist = client.get(artifact_url(build.build.pk), {"prefix": "dist/"}).json()
    assert [a["path"] for a in dist["results"]] == ["dist/a.tar.gz", "dist/b.tar.gz"]
    page = client.get(artifact_url(build.build.pk), {"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next"] is not None


def test_build_detail_counts_the_artifacts(api, build):
    upload(api, build.token, build.build.pk, "a", b"12345")
    detail = api.as_key(build.token).get(f"/api/v1/builds/{build.build.pk}/").json()
    assert (detail["artifact_count"], detail["total_size"]) == (1, 5)


def test_write_after_the_build_finished_is_403(api, build):
    upload(api, build.token, build.build.pk, "a", b"before")
    build_services.build_finish(build=build.build, state=Build.State.SUCCEEDED)
    response = upload(api, build.token, build.build.pk, "b", b"after")
    assert response.status_code == 403
    assert not Artifact.objects.filter(path="b").exists()
    assert download(api, build.token, build.build.pk, "a").body == b"before"


def test_another_builds_key_gets_404(api, build, other_build, other_project_build):
    upload(api, build.token, build.build.pk, "a", b"mine")
    for stranger in (other_build, other_project_build):
        assert download(api, stranger.token, build.build.pk, "a").status_code == 404
        assert upload(api, stranger.token, build.build.pk, "b", b"x").status_code == 404
        listing = api.as_key(stranger.token).get(artifact_url(build.build.pk))
        assert listing.status_code == 404


def test_unknown_artifact_is_404(api, build):
    assert download(api, build.token, build.build.pk, "missing").status_code == 404


def test_no_credential_is_401(api, build):
    assert api.get(artifact_url(build.build.pk, "a")).status_code == 401
    assert api.generic("PUT", artifact_url(build.build.pk, "a"), b"x").status_code == 401


def test_unsupported_method_is_405(api, build):
    response = api.as_key(build.token).delete(artifact_url(build.build.pk, "a"))
    assert response.status_code == 405


def test_invalid_content_type_is_400(api, build):
    response = upload(api, build.token, build.build.pk, "a", b"x", content_type="not a type")
    assert response.status_code == 400


def test_a_build_of_another_project_does_not_share_the_path(api, project):
    one, two = make_build(project), make_build(make_project(slug="another-project"))
    assert one.build.project_id != two.build.project_id
    assert upload(api, one.token, one.build.pk, "a", b"one").status_code == 201
    assert upload(api, two.token, two.build.pk, "a", b"two").status_code == 201
    assert download(api, one.token, one.build.pk, "a").body == b"one"
    assert download(api, two.token, two.build.pk, "a").body == b"two"
    # Neither key reaches the other project's build, though the path is the same.
    assert download(api, one.token, two.build.pk, "a").status_code == 404
    assert download(api, two.token, one.build.pk, "a").status_code == 404


@pytest.mark.parametrize(
    "content_length",
    ["²", "٣", "-1", "1e3", " 4", "9" * 5000],
    ids=["superscript-two", "arabic-indic-three", "negative", "exponent", "space", "5000-digits"],
)
def test_a_content_length_that_is_not_ascii_digits_is_400(api, build, content_length):
    response = api.as_key(build.token).generic(
        "PUT", artifact_url(build.build.pk, "a"), b"data", CONTENT_LENGTH=content_length
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "Content-Length must be a number of bytes."
    assert not Artifact.objects.exists()
