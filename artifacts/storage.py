"""Blob bytes in the configured Django storage (``STORAGES["default"]``).

Uploads stream into a *staging* object that only becomes a blob once its SHA-256 is known and
verified; anything that goes wrong before that (checksum mismatch, quota, a client that hangs
up) aborts the staging object, so nothing is ever visible half-written. Each backend does that
the cheapest way it can: a rename on a filesystem, a multipart upload that is completed or
aborted on S3. Neither copies the bytes a second time.
"""

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils.http import content_disposition_header

from .errors import DependencyUnavailable

logger = logging.getLogger(__name__)

STAGING_DIR = "incoming"
BLOB_PREFIX = "blobs/"
# S3 objects are written under their final name from the start (S3 cannot rename): an object
# here with no Blob row is a staged upload that never got its row (a crash between completing
# the upload and recording it).
S3_STAGED_PREFIX = "blobs/staged/"


class _Breaker:
    """Fail fast while the object store is known to be down (a circuit breaker, per process and
    store). After ``AWS_S3_BREAKER_FAILURES`` unavailability errors in a row, calls are refused at
    once for ``AWS_S3_BREAKER_SECONDS`` instead of each holding a server thread for its full
    timeouts; then one call probes the store (the others still fail fast): its success closes
    the breaker, its failure reopens it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures = 0
        self.open_until = 0.0
        self.tripped = False

    def check(self) -> None:
        with self.lock:
            now = time.monotonic()
            if now < self.open_until:
                raise DependencyUnavailable()
            if self.tripped:
                # Half-open: this call probes the store; the others keep failing fast until it
                # succeeds (closing the breaker) or fails (reopening it).
                self.open_until = now + settings.AWS_S3_BREAKER_SECONDS

    def refusing(self) -> bool:
        """Open: calls are refused now. Unlike check(), never takes the half-open probe."""
        with self.lock:
            return time.monotonic() < self.open_until

    def failed(self) -> None:
        threshold = settings.AWS_S3_BREAKER_FAILURES
        if threshold <= 0:
            return
        with self.lock:
            self.failures += 1
            if self.tripped or self.failures >= threshold:
                self.tripped = True
                self.failures = 0
                self.open_until = time.monotonic() + settings.AWS_S3_BREAKER_SECONDS
                logger.warning("object store unavailable: failing fast for a while")

    def succeeded(self) -> None:
        with self.lock:
            self.failures = 0
            if self.tripped:
                self.tripped = False
                self.open_until = 0.0


_breakers: dict[tuple, _Breaker] = {}
_breakers_lock = threading.Lock()


def _breaker(storage) -> _Breaker:
    key = (storage.endpoint_url, storage.bucket_name)
    with _breakers_lock:
        return _breakers.setdefault(key, _Breaker())


@contextlib.contextmanager
def s3_errors(storage=None) -> Iterator[None]:
    """Turn the object store being down, slow (the client's timeouts, after its bounded
    retries) or overloaded into DependencyUnavailable (503), which the API answers with
    Retry-After. A 4xx from S3 is our bug, not an outage: it stays an error."""
    breaker = _breaker(storage or blob_storage())
    breaker.check()
    try:
        yield
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = exc.response.get("Error", {}).get("Code", "")
        if status >= 500 or code in {"SlowDown", "ServiceUnavailable", "RequestTimeout"}:
            logger.warning("object store error %s (HTTP %s)", code, status)
            breaker.failed()
            raise DependencyUnavailable() from exc
        breaker.succeeded()  # it answered
        raise
    except BotoCoreError as exc:
        # Connection refused/reset/closed, connect and read timeouts, a body cut mid-stream.
        logger.warning("object store unavailable: %s", type(exc).__name__)
        breaker.failed()
        raise DependencyUnavailable() from exc
    breaker.succeeded()


def blob_storage() -> Storage:
    # Looked up on every call: tests (and settings overrides) swap STORAGES at runtime.
    return storages["default"]


def blob_name(sha256: str) -> str:
    """A fresh storage name for these bytes. Unique per write, so deleting a purged blob's
    object can never remove bytes a concurrent upload of the same content just stored."""
    return f"blobs/{sha256[:2]}/{sha256}.{os.urandom(6).hex()}"


class BlobWriter:
    """Receives an upload's bytes in order; ``commit`` publishes them, ``abort`` discards."""

    def write(self, data: bytes | memoryview) -> None:
        """Take ``data`` now: the caller reuses its buffer once this returns."""
        raise NotImplementedError

    def commit(self, *, sha256: str) -> str:
        """Make the bytes visible under a blob name; return that name."""
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class DiscardingWriter(BlobWriter):
    """For bytes the store already holds: they are only hashed (to verify them), not stored."""

    def write(self, data: bytes | memoryview) -> None:
        pass

    def commit(self, *, sha256: str) -> str:
        raise RuntimeError("a discarding writer has nothing to commit")

    def abort(self) -> None:
        pass


def _in_directory(operation, path: str):
    """``operation()``, creating ``path``'s directory first if it is missing. Tried first
    without: the directories exist on every upload but the first few, and a failed attempt
    costs nothing, while a ``makedirs`` per file is two system calls on every upload."""
    try:
        return operation()
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return operation()


class FileSystemBlobWriter(BlobWriter):
    def __init__(self, storage: FileSystemStorage) -> None:
        self.storage = storage
        # Names are ours (hex digits), so joining them to the root needs no safe_join.
        self.root = storage.location
        self.staging = os.path.join(self.root, STAGING_DIR, os.urandom(16).hex())
        self.fd: int | None = None
        self.fd = _in_directory(
            lambda: os.open(self.staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
            self.staging,
        )

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def commit(self, *, sha256: str) -> str:
        mode = self.storage.file_permissions_mode
        os.fchmod(self.fd, mode if mode is not None else 0o644)
        self._close()
        name = blob_name(sha256)
        target = os.path.join(self.root, name)
        # Same filesystem, so this is atomic: the blob appears whole or not at all.
        _in_directory(lambda: os.replace(self.staging, target), target)
        return name

    def abort(self) -> None:
        self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.staging)


class S3BlobWriter(BlobWriter):
    """An object written in one PutObject if it is smaller than ``ARTIFACT_S3_PART_SIZE``, else
    as a multipart upload of parts of that size (S3 needs >= 5 MiB per part but the last).
    Most artifacts are small: one request each instead of three (create, part, complete), and
    nothing to abort when an upload fails before its first part.

    The object key is final from the start (S3 cannot rename), but the object only exists once
    the PutObject, or the multipart upload's completion, has succeeded; an aborted one leaves
    nothing.
    """

    def __init__(self, storage) -> None:
        self.storage = storage
        self.client = storage.connection.meta.client
        self.bucket = storage.bucket_name
        self.name = f"blobs/staged/{uuid.uuid4().hex}"
        self.key = storage._normalize_name(self.name)
        self.part_size = settings.ARTIFACT_S3_PART_SIZE
        self.buffer = bytearray()
        self.parts: list[dict] = []
        self.upload_id = None
        # A store known to be down refuses the upload before its body is read (without taking
        # the half-open probe: the upload's first request to the store is that probe).
        if _breaker(storage).refusing():
            raise DependencyUnavailable()

    def _flush(self) -> None:
        with s3_errors(self.storage):
            if self.upload_id is None:
                self.upload_id = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key
                )["UploadId"]
            number = len(self.parts) + 1
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                Body=bytes(self.buffer),
            )
        self.parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self.buffer.clear()

    def write(self, data: bytes | memoryview) -> None:
        self.buffer += data
        if len(self.buffer) >= self.part_size:
            self._flush()

    def commit(self, *, sha256: str) -> str:
        if not self.parts:  # smaller than a part: one request
            with s3_errors(self.storage):
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
            self.buffer = bytearray()
            return self.name
        if self.buffer:
            self._flush()
        with s3_errors(self.storage):
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        # Completed: the upload id is spent, there is nothing left to abort (an abort now would
        # answer NoSuchUpload). Until the Blob row exists, the object is reconciliation's.
        self.upload_id = None
        return self.name

    def abort(self) -> None:
        self.buffer = bytearray()
        if self.upload_id is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        with s3_errors(self.storage):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)


def _is_s3(storage: Storage) -> bool:
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # pragma: no cover - django-storages is a dependency
        return False
    return isinstance(storage, S3Storage)


def blob_writer_open() -> BlobWriter:
    storage = blob_storage()
    if isinstance(storage, FileSystemStorage):
        return FileSystemBlobWriter(storage)
    if _is_s3(storage):
        return S3BlobWriter(storage)
    raise ImproperlyConfigured(
        f"Artifact storage {type(storage).__name__} is not supported: use FileSystemStorage or "
        "django-storages' S3Storage."
    )


def blob_storage_local() -> bool:
    """Blobs are files on this machine's disk (not objects in a remote store)."""
    return isinstance(blob_storage(), FileSystemStorage)


def blob_local_path(name: str) -> str | None:
    """The blob's path on local disk (served with sendfile), or None for remote storage."""
    storage = blob_storage()
    if isinstance(storage, FileSystemStorage):
        return storage.path(name)
    return None


def blob_read(name: str, *, start: int, length: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Stream ``length`` bytes of a blob from ``start`` without holding them all in memory."""
    storage = blob_storage()
    if length <= 0:
        return iter(())
    if _is_s3(storage):
        # S3File would download the whole object to a temporary file first; a ranged GET
        # streams exactly the bytes asked for. The request is made now, not when the response
        # starts streaming: an unreachable store is then a 503, not a connection cut after a 200.
        with s3_errors(storage):
            response = storage.connection.meta.client.get_object(
                Bucket=storage.bucket_name,
                Key=storage._normalize_name(name),
                Range=f"bytes={start}-{start + length - 1}",
            )
        return _s3_body_chunks(response["Body"], chunk_size)
    return _file_chunks(storage, name, start=start, length=length, chunk_size=chunk_size)


def _s3_body_chunks(body, chunk_size: int) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()


def _file_chunks(storage, name: str, *, start: int, length: int, chunk_size: int):
    with storage.open(name, "rb") as fh:
        fh.seek(start)
        remaining = length
        while remaining:
            data = fh.read(min(chunk_size, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data


def _public_s3_client(storage):
    """A client that signs for the endpoint clients reach (AWS_S3_PUBLIC_ENDPOINT_URL, else the
    storage's own), with SigV4: a pre-signed URL is only valid for the host it was signed for,
    and signature v2 is gone from AWS regions opened since 2014."""
    import boto3
    from botocore.config import Config

    endpoint = settings.AWS_S3_PUBLIC_ENDPOINT_URL or storage.endpoint_url or None
    cache_key = (endpoint, storage.access_key, storage.region_name)
    client = _PUBLIC_CLIENTS.get(cache_key)
    if client is None:
        # Keys from the storage's options, else boto3's own chain (environment, instance role).
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=storage.region_name or "us-east-1",
            aws_access_key_id=storage.access_key or None,
            aws_secret_access_key=storage.secret_key or None,
            aws_session_token=getattr(storage, "security_token", None) or None,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        _PUBLIC_CLIENTS[cache_key] = client
    return client


_PUBLIC_CLIENTS: dict = {}


def blob_presigned_url(name: str, *, filename: str, expires: int) -> str | None:
    """A short-lived SigV4 URL straight to the storage (S3) for clients, or None when the
    storage has none. S3 answers it with the disposition and type set here."""
    storage = blob_storage()
    if not _is_s3(storage):
        return None
    # Signing is local (no request), but boto3 may fetch credentials.
    with s3_errors(storage):
        return _public_s3_client(storage).generate_presigned_url(
            "get_object",
            Params={
                "Bucket": storage.bucket_name,
                "Key": storage._normalize_name(name),
                "ResponseContentDisposition": content_disposition_header(True, filename),
                "ResponseContentType": "application/octet-stream",
            },
            ExpiresIn=expires,
        )


def blob_delete(name: str) -> None:
    storage = blob_storage()
    if _is_s3(storage):
        with s3_errors(storage):
            storage.delete(name)
        return
    storage.delete(name)


def staging_purge(*, older_than_seconds: int) -> int:
    """Remove staging files a crashed worker left behind (filesystem only: on S3 use a bucket
    lifecycle rule AbortIncompleteMultipartUpload). Returns how many were removed."""
    storage = blob_storage()
    if not isinstance(storage, FileSystemStorage):
        return 0
    directory = Path(storage.path(STAGING_DIR))
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than_seconds
    removed = 0
    for entry in directory.iterdir():
        if entry.is_file() and entry.stat().st_mtime < cutoff:
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


# --- Reconciliation -------------------------------------------------------------------------


@dataclass
class Reconciled:
    """What a reconciliation pass did: aborted multipart uploads, deleted orphan objects, and
    the names of objects the database does not know that are not ours to delete."""

    uploads_aborted: int = 0
    orphans_deleted: int = 0
    unknown: list[str] = field(default_factory=list)


def storage_reconcile(
    *, known_names, older_than_seconds: int, now: float | None = None
) -> Reconciled:
    """Bring the store back in line with the database.

    ``known_names(names)`` returns the subset of ``names`` a Blob row names. Everything younger
    than ``older_than_seconds`` is left alone: an upload in flight has an open multipart upload,
    and between completing it and recording its row, an object no row names yet.
    Under ``blobs/`` every object is one an upload wrote (unique name per write), so one that no
    row names after the grace period is an orphan (a worker killed between completing the
    upload and recording it) and is deleted; anything else the database does not know is only
    reported, for an operator to look at.
    """
    storage = blob_storage()
    cutoff = (time.time() if now is None else now) - older_than_seconds
    result = Reconciled()
    if _is_s3(storage):
        with s3_errors(storage):
            _s3_reconcile(storage, known_names, cutoff, result)
    elif isinstance(storage, FileSystemStorage):
        _filesystem_reconcile(storage, known_names, cutoff, result)
    if result.unknown:
        logger.warning(
            "%d object(s) in the artifact storage are unknown to the database, e.g. %s",
            len(result.unknown),
            ", ".join(result.unknown[:5]),
        )
    return result


def _s3_reconcile(storage, known_names, cutoff: float, result: Reconciled) -> None:
    client = storage.connection.meta.client
    bucket = storage.bucket_name
    prefix = storage._normalize_name(BLOB_PREFIX)
    cutoff_dt = datetime.fromtimestamp(cutoff, tz=UTC)
    for page in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        for upload in page.get("Uploads", []):
            if upload["Initiated"] < cutoff_dt:
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                result.uploads_aborted += 1
    # Object keys carry the storage's location prefix; Blob.storage_name does not.
    root = storage._normalize_name("")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root):
        objects = {
            item["Key"][len(root) :]: item
            for item in page.get("Contents", [])
            if item["LastModified"] < cutoff_dt
        }
        unknown = set(objects) - known_names(list(objects))
        for name in sorted(unknown):
            if name.startswith(BLOB_PREFIX):
                client.delete_object(Bucket=bucket, Key=objects[name]["Key"])
                result.orphans_deleted += 1
            else:
                result.unknown.append(name)


def _filesystem_reconcile(storage, known_names, cutoff: float, result: Reconciled) -> None:
    root = Path(storage.path(""))
    if not root.is_dir():
        return
    batch: list[tuple[str, Path]] = []

    def settle() -> None:
        unknown = {name for name, _ in batch} - known_names([name for name, _ in batch])
        for name, path in batch:
            if name not in unknown:
                continue
            if name.startswith(BLOB_PREFIX):
                path.unlink(missing_ok=True)
                result.orphans_deleted += 1
            else:
                result.unknown.append(name)
        batch.clear()

    for path in root.rglob("*"):
        name = path.relative_to(root).as_posix()
        if name.startswith(f"{STAGING_DIR}/") or not path.is_file():
            continue  # staging files are staging_purge's
        if path.stat().st_mtime >= cutoff:
            continue
        batch.append((name, path))
        if len(batch) >= 1000:
            settle()
    settle()
