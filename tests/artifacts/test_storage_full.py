"""A full disk is the server's condition: a clear 507, and nothing left behind."""

import errno

import pytest

from artifacts.storage import FileSystemBlobWriter

from .conftest import artifact_url, upload

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_upload_to_a_full_disk_is_507_and_leaves_nothing(api, build, monkeypatch, tmp_path, code):
    # A disk cannot be filled here safely: the write itself is made to fail as a full one does.
    def full(self, data):
        raise OSError(code, "No space left on device")

    monkeypatch.setattr(FileSystemBlobWriter, "write", full)
    response = upload(api, build.token, build.build.pk, "dist/big.bin", b"x" * 10_000)
    assert response.status_code == 507
    assert response.json()["code"] == "storage_full"
    listing = api.as_key(build.token).get(artifact_url(build.build.pk)).json()
    assert listing["results"] == []
    incoming = tmp_path / "artifacts" / "incoming"
    assert not incoming.exists() or not any(incoming.iterdir())
