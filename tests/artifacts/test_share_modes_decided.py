"""The app decides every precondition and range, whatever server sends the bytes: nginx
(x-accel) is told to send the whole file or the one range the app read, and requests nginx or
S3 would judge by validators of their own are answered by the app. The same requests through
real nginx and S3 are in test_share_e2e.py."""

import hashlib
import os

import pytest

from .conftest import artifact_url, body_of, upload
from .test_signed_link_pipeline import fetch

pytestmark = pytest.mark.django_db

DATA = os.urandom(5000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def link(api, build, store, settings):
    if store.mode != "filesystem":
        pytest.skip("nginx sends files from the artifact root on disk")
    settings.SHARE_SERVE_MODE = "x-accel"
    assert upload(api, build.token, build.build.pk, "dist/app.bin", DATA).status_code == 201
    response = api.as_key(build.token).post(
        f"/api/v1/builds/{build.build.pk}/share", {"expires_in": 600}, format="json"
    )
    return response.json()["artifacts"][0]["url"]


WHOLE, RANGED = "/_artifacts/full/blobs/", "/_artifacts/blobs/"


def by_the_app(status: int, body: bytes) -> tuple[int, bytes]:
    return status, body


@pytest.mark.parametrize(
    ("headers", "handed_to"),
    [
        ({}, WHOLE),
        ({"Range": "bytes=0-9"}, RANGED),
        ({"Range": "bytes=-10"}, RANGED),
        ({"Range": "bytes=10-"}, RANGED),
        # Whole-file answers: nginx would send multipart, or 416, or read the unit's case.
        ({"Range": "bytes=0-1,4-5"}, WHOLE),
        ({"Range": "bytes=5-2"}, WHOLE),
        ({"Range": "BYTES=0-1"}, WHOLE),
        ({"Range": "bytes=abc"}, WHOLE),
        ({"Range": "bytes=0-1", "If-Range": '"stale"'}, WHOLE),
        ({"Range": "bytes=0-1", "If-Range": "Thu, 01 Jan 2099 00:00:00 GMT"}, WHOLE),
        # One range the app reads that nginx would refuse (its numbers overflow there).
        ({"Range": "bytes=1-" + "9" * 30}, by_the_app(206, DATA[1:])),
        # Judged by nginx against the file's mtime and no ETag: 412 for any of these.
        ({"If-Match": f'"{SHA}"'}, by_the_app(200, DATA)),
        ({"If-Match": "*", "Range": "bytes=0-9"}, by_the_app(206, DATA[:10])),
        ({"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}, by_the_app(200, DATA)),
    ],
)
def test_nginx_is_told_exactly_what_to_send(link, headers, handed_to):
    response = fetch(link, **headers)
    if isinstance(handed_to, tuple):
        assert "X-Accel-Redirect" not in response
        assert (response.status_code, response.body) == handed_to
    else:
        assert response.status_code == 200 and response.body == b""
        assert response["X-Accel-Redirect"].startswith(handed_to)
    assert response["Accept-Ranges"] == "bytes"
    assert response["ETag"] == f'"{SHA}"'


@pytest.mark.parametrize("if_match", ['"another"', f'W/"{SHA}"', '"another", W/"x"'])
def test_if_match_naming_another_representation_is_412_in_every_mode(link, settings, if_match):
    for mode in ("direct", "x-accel", "s3"):
        settings.SHARE_SERVE_MODE = mode
        response = fetch(link, **{"If-Match": if_match})
        assert response.status_code == 412, mode
        assert response.body == b"" and "X-Accel-Redirect" not in response
        assert response["Content-Security-Policy"] == "sandbox"


def test_the_artifact_api_answers_if_match_itself_rather_than_redirect_to_s3(
    api, build, store, settings
):
    if store.mode != "s3":
        pytest.skip("a pre-signed URL exists only for S3 storage")
    settings.ARTIFACT_S3_REDIRECT = True
    assert upload(api, build.token, build.build.pk, "dist/app.bin", DATA).status_code == 201
    url = artifact_url(build.build.pk, "dist/app.bin")
    client = api.as_key(build.token)
    assert client.get(url).status_code == 302
    matched = client.get(url, HTTP_IF_MATCH=f'"{SHA}"')
    assert matched.status_code == 200 and body_of(matched) == DATA
    assert client.get(url, HTTP_IF_MATCH='"another"').status_code == 412
    unmodified = client.get(url, HTTP_IF_UNMODIFIED_SINCE="Thu, 01 Jan 1970 00:00:00 GMT")
    assert unmodified.status_code == 200 and body_of(unmodified) == DATA
