"""The hot paths cost a fixed number of queries, however many artifacts the project holds.

Counted in transactional tests, as in production (no test transaction around the request, so
BEGIN and COMMIT count where a request opens a transaction). The same budget on both
databases.
"""

import os

import pytest

from artifacts.models import Artifact, Blob
from devtools.factories import make_build

from .conftest import artifact_url, download, upload

pytestmark = pytest.mark.django_db(transaction=True)

UPLOAD, DOWNLOAD, BUILD_GET = 5, 3, 2


def seed(project, count: int) -> None:
    """``count`` artifacts in another build of the project, written in bulk."""
    other = make_build(project).build
    blob = Blob.objects.create(sha256="f" * 64, size=1, storage_name="blobs/seed")
    Artifact.objects.bulk_create(
        [Artifact(build=other, path=f"seed/{i}", blob=blob) for i in range(count)],
        batch_size=2000,
    )


@pytest.fixture(params=[10, 10_000], ids=["10-artifacts", "10k-artifacts"])
def busy(request, project, build, api):
    seed(project, request.param)
    # The key's first use records last_used_at once; measure the steady state after it.
    assert upload(api, build.token, build.build.pk, "warm", b"warm").status_code == 201
    return build


def test_upload_of_new_bytes_stays_within_budget(api, busy, django_assert_max_num_queries):
    with django_assert_max_num_queries(UPLOAD):
        response = upload(api, busy.token, busy.build.pk, "dist/new.bin", os.urandom(4096))
    assert response.status_code == 201


def test_upload_of_known_bytes_stays_within_budget(api, busy, django_assert_max_num_queries):
    with django_assert_max_num_queries(UPLOAD):
        response = upload(api, busy.token, busy.build.pk, "dist/again.bin", b"warm")
    assert response.status_code == 201


def test_download_stays_within_budget(api, busy, django_assert_max_num_queries):
    with django_assert_max_num_queries(DOWNLOAD):
        response = download(api, busy.token, busy.build.pk, "warm")
    assert response.status_code == 200 and response.body == b"warm"


def test_build_get_stays_within_budget(api, busy, django_assert_max_num_queries):
    with django_assert_max_num_queries(BUILD_GET):
        response = api.as_key(busy.token).get(f"/api/v1/builds/{busy.build.pk}/")
    assert response.status_code == 200 and response.json()["artifact_count"] == 1


def test_listing_page_stays_within_budget(api, busy, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):
        response = api.as_key(busy.token).get(artifact_url(busy.build.pk))
    assert response.status_code == 200
