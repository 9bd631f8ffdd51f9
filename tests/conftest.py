import pytest
from rest_framework.test import APIClient

from devtools.factories import make_build, make_project, make_project_key


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    """Every test writes artifacts under its own temporary directory."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "artifacts"},
        },
    }
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"


class Api(APIClient):
    """An API client that authenticates with a bearer token per call or by default."""

    def as_key(self, token: str | None) -> "Api":
        client = Api()
        if token is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client


@pytest.fixture
def api() -> Api:
    return Api()


@pytest.fixture
def project(db):
    return make_project(slug="app")


@pytest.fixture
def project_token(project) -> str:
    return make_project_key(project)


@pytest.fixture
def build(project):
    """A running build of ``project`` with its key (``.build``, ``.key``, ``.token``)."""
    return make_build(project, ref="refs/heads/main", commit="a" * 40)


@pytest.fixture
def other_build(project):
    return make_build(project, ref="refs/heads/feature", commit="b" * 40)


@pytest.fixture
def other_project_build(db):
    return make_build(make_project(slug="elsewhere"))
