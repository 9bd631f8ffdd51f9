"""Storing, reading and purging artifacts. Views, tasks and commands call these."""

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from builds.models import Build, Project

from . import storage
from .errors import (
    ArtifactConflict,
    BlobVanished,
    BuildNotWritable,
    ChecksumMismatch,
    QuotaExceeded,
)
from .models import Artifact, Blob
from .paths import artifact_path_clean
from .transfer import body_receive

logger = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StoredArtifact:
    artifact: Artifact
    created: bool


def _quota_room(*, build: Build) -> tuple[int, str]:
    """How many more bytes one artifact of ``build`` may have, and the sentence if it has not."""
    max_size = settings.ARTIFACT_MAX_SIZE
    used = Artifact.objects.filter(build__project_id=build.project_id).aggregate(
        project=Coalesce(Sum("blob__size"), 0),
        build=Coalesce(Sum("blob__size", filter=Q(build_id=build.pk)), 0),
    )
    build_room = settings.BUILD_ARTIFACTS_QUOTA - used["build"]
    project_room = settings.PROJECT_ARTIFACTS_QUOTA - used["project"]
    return min(
        (max_size, f"An artifact may be at most {max_size} bytes."),
        (
            build_room,
            f"The build's artifacts may total at most {settings.BUILD_ARTIFACTS_QUOTA} bytes.",
        ),
        (
            project_room,
            f"The project's artifacts may total at most {settings.PROJECT_ARTIFACTS_QUOTA} bytes.",
        ),
        key=lambda room: room[0],
    )


def _check_quota(*, build: Build, size: int) -> None:
    room, reason = _quota_room(build=build)
    if size > room:
        raise QuotaExceeded(reason)


def _blob_touch(sha256: str) -> bool:
    """Mark a blob as about to be linked; False if no such blob."""
    return bool(Blob.objects.filter(sha256=sha256).update(referenced_at=timezone.now()))


def artifact_store(
    *,
    build: Build,
    path: str,
    stream,
    content_length: int | None,
    content_type: str = "",
    expected_sha256: str | None = None,
) -> StoredArtifact:
    """Stream a request body into the build's artifact at ``path``.

    Same bytes at the same path again: the existing artifact (created=False). Different bytes:
    ArtifactConflict. The bytes become visible only once their digest is verified and the
    artifact row is committed; any failure before that leaves nothing behind.
    """
    path = artifact_path_clean(path)
    if expected_sha256 is not None:
        expected_sha256 = expected_sha256.strip().lower()
        if not SHA256_HEX.match(expected_sha256):
            raise ChecksumMismatch(
                "X-Checksum-Sha256 must be 64 hexadecimal characters.", code="invalid_checksum"
            )
    if not build.is_running:
        raise BuildNotWritable()
    existing = Artifact.objects.filter(build=build, path=path).select_related("blob").first()
    room, reason = _quota_room(build=build)
    if existing is not None:
        # A re-upload replaces nothing: it may be as large as what the path already holds.
        room = max(room, existing.size)
    if content_length is not None and content_length > room:
        raise QuotaExceeded(reason)  # before a single body byte is read

    if existing is not None:
        # Only the digest matters now: hash the body, store nothing.
        writer = storage.DiscardingWriter()
    elif expected_sha256 is not None and _blob_touch(expected_sha256):
        # The store already holds bytes with the announced digest: verify, don't rewrite.
        writer = storage.DiscardingWriter()
    else:
        writer = storage.blob_writer_open()

    committed = False
    try:
        received = body_receive(
            stream=stream,
            writer=writer,
            content_length=content_length,
            limit=room,
            limit_reason=reason,
        )
        if expected_sha256 is not None and received.sha256 != expected_sha256:
            raise ChecksumMismatch()
        if existing is not None:
            if existing.sha256 != received.sha256:
                raise ArtifactConflict(
                    f"{path} already holds different bytes (sha256 {existing.sha256}); "
                    "artifacts are immutable."
                )
            return StoredArtifact(existing, created=False)
        stored = _artifact_link(
            build=build,
            path=path,
            sha256=received.sha256,
            size=received.size,
            content_type=content_type or "application/octet-stream",
            writer=writer,
        )
        committed = True
        return stored
    finally:
        if not committed:
            try:
                writer.abort()
            except Exception:  # the original error matters more than a failed cleanup
                logger.exception("could not discard a staged upload")


@transaction.atomic
def _artifact_link(
    *,
    build: Build,
    path: str,
    sha256: str,
    size: int,
    content_type: str,
    writer: storage.BlobWriter,
) -> StoredArtifact:
    """Second half of a store: under the build's row lock (and the project's, for its quota),
    re-check what may have changed while the body streamed (finish, a concurrent upload of the
    path, quotas, purge) and link."""
    build = Build.objects.select_for_update().get(pk=build.pk)
    if not build.is_running:
        raise BuildNotWritable()
    existing = Artifact.objects.filter(build=build, path=path).select_related("blob").first()
    if existing is not None:
        if existing.sha256 != sha256:
            raise ArtifactConflict(
                f"{path} already holds different bytes; artifacts are immutable."
            )
        writer.abort()
        return StoredArtifact(existing, created=False)
    # The project's row orders the quota checks of all its builds' uploads: under the build's
    # lock alone, two builds could each see room for one more artifact and both take it.
    Project.objects.select_for_update(no_key=True).get(pk=build.project_id)
    _check_quota(build=build, size=size)
    # Locking the blob row orders us against retention: it deletes a blob only under this lock
    # and only if nothing references it, so once we hold it the blob stays.
    blob = Blob.objects.select_for_update().filter(sha256=sha256).first()
    if blob is None and isinstance(writer, storage.DiscardingWriter):
        raise BlobVanished()
    name = None
    if blob is None:
        blob, name = _blob_publish(sha256=sha256, size=size, writer=writer)
    else:
        writer.abort()  # the bytes are stored already: dedup
        Blob.objects.filter(pk=blob.pk).update(referenced_at=timezone.now())
    try:
        artifact = Artifact.objects.create(
            build=build, path=path, blob=blob, content_type=content_type[:255]
        )
    except Exception:
        if name is not None:
            # The object was published for a row that will not exist: do not leave it behind.
            storage.blob_delete(name)
        raise
    return StoredArtifact(artifact, created=True)


def _blob_publish(*, sha256: str, size: int, writer: storage.BlobWriter) -> tuple[Blob, str | None]:
    """Publish the staged bytes as the blob for ``sha256`` and return it locked, with the name
    of the object published (None when another upload's blob won).

    An upload of the same bytes to another build holds another build's lock, so it can get here
    at the same time: on PostgreSQL the second insert waits for the first transaction and then
    violates the primary key. The savepoint keeps our transaction usable; the other upload's
    blob is then as good as ours, so ours is deleted at once (no row will ever name it, whether
    or not this transaction commits) and the artifact links to theirs.
    """
    name = writer.commit(sha256=sha256)
    try:
        with transaction.atomic():
            return Blob.objects.create(sha256=sha256, size=size, storage_name=name), name
    except IntegrityError:
        pass
    try:
        storage.blob_delete(name)
    except Exception:  # an orphan object costs space; failing the upload would cost more
        logger.exception("could not delete the duplicate object %s", name)
    blob = Blob.objects.select_for_update().filter(sha256=sha256).first()
    if blob is None:  # purged since that upload linked it: vanishingly rare; a retry stores it
        raise BlobVanished()
    Blob.objects.filter(pk=blob.pk).update(referenced_at=timezone.now())
    return blob, None


# --- Retention ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    artifacts: int
    blobs: int
    staging_files: int


def builds_expired(*, now: datetime):
    """Builds older than their project's retention (the age their build keys expire at)."""
    expired = Q(pk__in=[])
    for days in Project.objects.values_list("retention_days", flat=True).distinct():
        expired |= Q(project__retention_days=days, created_at__lte=now - timedelta(days=days))
    return Build.objects.filter(expired)


def blob_purge_if_unreferenced(*, sha256: str, referenced_before: datetime) -> bool:
    """Delete one blob (row, then its stored object) if nothing references it and no upload
    touched it since ``referenced_before``. Safe against a concurrent upload of the same bytes:
    both sides decide under the blob's row lock."""
    with transaction.atomic():
        blob = Blob.objects.select_for_update().filter(sha256=sha256).first()
        if blob is None or blob.referenced_at >= referenced_before:
            return False
        if Artifact.objects.filter(blob=blob).exists():
            return False
        name = blob.storage_name
        blob.delete()
    # After the commit: a failed delete leaves an orphan object, never a row without bytes.
    storage.blob_delete(name)
    return True


def retention_purge(*, now: datetime | None = None) -> PurgeResult:
    """Delete artifacts of builds past their project's retention, then unreferenced blobs."""
    now = now or timezone.now()
    expired = Artifact.objects.filter(build__in=builds_expired(now=now))
    _, deleted = expired.delete()
    referenced_before = now - timedelta(seconds=settings.ARTIFACT_BLOB_GRACE_SECONDS)
    candidates = Blob.objects.unreferenced().filter(referenced_at__lt=referenced_before)
    blobs = sum(
        blob_purge_if_unreferenced(sha256=sha256, referenced_before=referenced_before)
        for sha256 in candidates.values_list("sha256", flat=True).iterator()
    )
    staging = storage.staging_purge(older_than_seconds=settings.ARTIFACT_BLOB_GRACE_SECONDS)
    return PurgeResult(
        artifacts=deleted.get("artifacts.Artifact", 0), blobs=blobs, staging_files=staging
    )
