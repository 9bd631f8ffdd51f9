"""Artifact tests run against each storage mode: the local filesystem and a real S3-compatible
server (moto's standalone server, a subprocess on loopback, spoken to over HTTP by boto3)."""

import hashlib
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from devtools.faults import FaultyS3
from devtools.servers import free_port, stop, wait_for_port

S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3-compatible server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@dataclass
class Store:
    """The storage a test's artifacts go to, and a way to look inside it without the app."""

    mode: str
    root: Path | None = None
    endpoint: str = ""
    bucket: str = ""

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", **S3_CREDENTIALS
        )

    def objects(self) -> list[str]:
        """Every stored object (blobs and anything half-written)."""
        if self.mode == "s3":
            listing = self.client().list_objects_v2(Bucket=self.bucket)
            return sorted(item["Key"] for item in listing.get("Contents", []))
        if not self.root.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def pending_uploads(self) -> list[str]:
        """Multipart uploads begun and neither completed nor aborted (S3 only)."""
        if self.mode != "s3":
            return []
        listing = self.client().list_multipart_uploads(Bucket=self.bucket)
        return [item["Key"] for item in listing.get("Uploads", [])]

    def storage_options(self) -> dict:
        if self.mode == "s3":
            return {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": self.bucket,
                    "endpoint_url": self.endpoint,
                    "region_name": "us-east-1",
                    "access_key": "testing",
                    "secret_key": "testing",
                    "file_overwrite": True,
                },
            }
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": self.root},
        }


@pytest.fixture(params=["filesystem", "s3"])
def store(request, settings, tmp_path) -> Store:
    """Parametrizes a test over both storage modes and points the app's storage at it."""
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_server")
        store = Store("s3", endpoint=endpoint, bucket=f"artifacts-{uuid.uuid4().hex[:12]}")
        store.client().create_bucket(Bucket=store.bucket)
    else:
        store = Store("filesystem", root=tmp_path / "store")
    settings.STORAGES = {**settings.STORAGES, "default": store.storage_options()}
    return store


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact_url(build_id: int, path: str = "") -> str:
    return f"/api/v1/builds/{build_id}/artifacts/{path}"


def upload(
    api,
    token: str,
    build_id: int,
    path: str,
    data: bytes,
    *,
    headers=None,
    content_type="application/octet-stream",
):
    return api.as_key(token).generic(
        "PUT", artifact_url(build_id, path), data, content_type=content_type, headers=headers
    )


def body_of(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def download(api, token: str, build_id: int, path: str, *, headers=None, method="get"):
    response = getattr(api.as_key(token), method)(artifact_url(build_id, path), headers=headers)
    response.body = body_of(response)
    return response


os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def fast_failing_client() -> Config:
    """What the settings build, with timeouts small enough for a test."""
    retries = {"max_attempts": 2, "mode": "standard"}
    return Config(connect_timeout=1, read_timeout=1, retries=retries)


@pytest.fixture
def faulty_s3(s3_server, settings):
    """The app's storage is a fresh bucket reached through a FaultyS3 proxy."""
    bucket = f"faulty-{os.urandom(6).hex()}"
    store = Store("s3", endpoint=s3_server, bucket=bucket)
    store.client().create_bucket(Bucket=bucket)
    with FaultyS3(s3_server, max_wait=10) as proxy:
        options = Store("s3", endpoint=proxy.url, bucket=bucket).storage_options()
        options["OPTIONS"]["client_config"] = fast_failing_client()
        settings.STORAGES = {**settings.STORAGES, "default": options}
        proxy.store = store
        yield proxy
