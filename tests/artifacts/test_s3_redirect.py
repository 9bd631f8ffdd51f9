"""ARTIFACT_S3_REDIRECT: downloads answer 302 to a short-lived S3 URL, so bytes never pass
through Django; the URL works on its own against the S3 server, and expires."""

import os

import pytest
import requests

from .conftest import artifact_url, body_of, sha256, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def redirecting(settings):
    settings.ARTIFACT_S3_REDIRECT = True
    settings.ARTIFACT_REDIRECT_EXPIRES = 60
    return settings


@pytest.fixture
def s3_store(store):
    if store.mode != "s3":
        pytest.skip("a pre-signed URL exists only for S3 storage")
    return store


@pytest.fixture
def filesystem_store(store):
    if store.mode != "filesystem":
        pytest.skip("covered by the S3 tests")
    return store


def test_on_filesystem_storage_the_redirect_setting_serves_the_bytes_itself(
    api, build, filesystem_store, redirecting
):
    """No storage URL to send the client to: the setting must not break downloads, and the
    answer is the same as with the setting off (same status, headers that matter, bytes)."""
    data = os.urandom(70_000)
    assert upload(api, build.token, build.build.pk, "dist/app.bin", data).status_code == 201
    url = artifact_url(build.build.pk, "dist/app.bin")
    redirected = api.as_key(build.token).get(url, HTTP_RANGE="bytes=10-19")
    assert redirected.status_code == 206
    assert "Location" not in redirected
    assert body_of(redirected) == data[10:20]
    redirecting_answer = {h: redirected[h] for h in ("ETag", "Content-Disposition")}
    redirecting.ARTIFACT_S3_REDIRECT = False
    plain = api.as_key(build.token).get(url, HTTP_RANGE="bytes=10-19")
    assert {h: plain[h] for h in ("ETag", "Content-Disposition")} == redirecting_answer


def test_s3_download_redirects_to_a_working_presigned_url(api, build, s3_store, redirecting):
    store = s3_store
    data = os.urandom(70_000)
    assert upload(api, build.token, build.build.pk, "dist/app.bin", data).status_code == 201
    response = api.as_key(build.token).get(artifact_url(build.build.pk, "dist/app.bin"))
    assert response.status_code == 302
    assert response["ETag"] == f'"{sha256(data)}"'
    location = response["Location"]
    assert location.startswith(store.endpoint)
    assert "Signature" in location or "X-Amz-Signature" in location
    fetched = requests.get(location, timeout=30)  # a plain client: no credential of ours
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["Content-Disposition"].startswith("attachment")
    ranged = requests.get(location, headers={"Range": "bytes=10-19"}, timeout=30)
    assert ranged.status_code == 206
    assert ranged.content == data[10:20]


def test_head_is_answered_by_us_even_when_redirecting(api, build, store, redirecting):
    data = b"hello"
    assert upload(api, build.token, build.build.pk, "a.txt", data).status_code == 201
    response = api.as_key(build.token).head(artifact_url(build.build.pk, "a.txt"))
    assert response.status_code == 200
    assert response["Content-Length"] == "5"


def test_redirects_are_sigv4_urls_for_the_public_endpoint(api, build, store, redirecting, settings):
    """The internal endpoint (http://minio:9000 in compose) is unreachable for clients: the URL
    is signed for AWS_S3_PUBLIC_ENDPOINT_URL, with SigV4 (signature v2 is gone from AWS)."""
    if store.mode != "s3":
        pytest.skip("S3 only")
    # The same loopback server under another name: a different host, as a client sees it.
    public = store.endpoint.replace("127.0.0.1", "localhost")
    settings.AWS_S3_PUBLIC_ENDPOINT_URL = public
    data = os.urandom(1000)
    assert upload(api, build.token, build.build.pk, "dist/app.bin", data).status_code == 201
    response = api.as_key(build.token).get(artifact_url(build.build.pk, "dist/app.bin"))
    location = response["Location"]
    assert location.startswith(public + "/")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in location
    fetched = requests.get(location, timeout=30)
    assert fetched.status_code == 200 and fetched.content == data
