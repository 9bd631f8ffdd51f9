"""A body in a transfer coding the service does not decode is refused, never stored as is."""

import os

import pytest

from artifacts.models import Artifact

from .conftest import artifact_url

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate,chunked", "x-custom, chunked"])
def test_an_upload_in_another_transfer_coding_is_501_and_stores_nothing(api, build, store, coding):
    response = api.as_key(build.token).put(
        artifact_url(build.build.pk, "dist/app.bin"),
        data=os.urandom(100),
        content_type="application/octet-stream",
        HTTP_TRANSFER_ENCODING=coding,
    )
    assert response.status_code == 501, response.content
    assert response.json()["code"] == "unsupported_transfer_coding"
    assert not Artifact.objects.filter(build=build.build).exists()
    assert store.objects() == []


def test_a_json_body_in_another_transfer_coding_is_501(api, project_token):
    response = api.as_key(project_token).post(
        "/api/v1/projects/app/builds/",
        data=b'{"ref": "refs/heads/main"}',
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="gzip, chunked",
    )
    assert response.status_code == 501
