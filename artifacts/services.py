"""Storing, reading and purging artifacts. Views, tasks and commands call these."""

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from builds.models import Build, Project

from . import storage, usage
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


def _checksum_clean(expected_sha256: str | None) -> str | None:
    if expected_sha256 is None:
        return None
    expected_sha256 = expected_sha256.strip().lower()
    if not SHA256_HEX.match(expected_sha256):
        raise ChecksumMismatch(
            "X-Checksum-Sha256 must be 64 hexadecimal characters.", code="invalid_checksum"
        )
    return expected_sha256


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

    ``build`` comes loaded with its project (usage counters): the quota is checked against
    them before a body byte is read, and decided when the artifact is linked.
    """
    path = artifact_path_clean(path)
    expected_sha256 = _checksum_clean(expected_sha256)
    if not build.is_running:
        raise BuildNotWritable()
    room, reason = usage.usage_room(build=build)
    if content_length is not None and content_length > room:
        # Over quota, unless it re-sends what the path holds: a re-upload replaces nothing.
        existing = Artifact.objects.filter(build=build, path=path).select_related("blob").first()
        if existing is not None:
            room = max(room, existing.size)
        if content_length > room:
            raise QuotaExceeded(reason)  # before a single body byte is read

    if expected_sha256 is not None and _blob_touch(expected_sha256):
        # The store already holds bytes with the announced digest: verify, don't rewrite.
        writer = storage.DiscardingWriter()
    else:
        writer = storage.blob_writer_open()

    published = None
    try:
        received = body_receive(
            stream=stream,
            writer=writer,
            content_length=content_length,
            limit=max(room, 0),
            limit_reason=reason,
        )
        if expected_sha256 is not None and received.sha256 != expected_sha256:
            raise ChecksumMismatch()
        if not isinstance(writer, storage.DiscardingWriter):
            published = _blob_publish(sha256=received.sha256, size=received.size, writer=writer)
        writer = None
        stored = _artifact_link(
            build=build,
            path=path,
            blob=Blob(sha256=received.sha256, size=received.size),
            content_type=content_type or "application/octet-stream",
        )
        published = None
        return stored
    finally:
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # the original error matters more than a failed cleanup
                logger.exception("could not discard a staged upload")
        if published is not None:
            _blob_unpublish(published)


def _artifact_link(*, build: Build, path: str, blob: Blob, content_type: str) -> StoredArtifact:
    """Second half of a store: the artifact row, counted against the quotas, in one statement
    that refuses if the build finished or a quota filled while the body streamed, or the path
    was taken meanwhile (a concurrent upload of it, or a re-upload). The blob row exists
    (published, or touched by this upload within its grace period); if retention removed it
    anyway, the foreign key refuses the link.
    """
    now = timezone.now()
    try:
        pk = usage.artifact_insert_within_quota(
            build_id=build.pk,
            path=path,
            sha256=blob.sha256,
            size=blob.size,
            content_type=content_type,
            created_at=now,
        )
    except IntegrityError as exc:  # the blob's row went (retention): the bytes must come again
        raise BlobVanished() from exc
    if pk is None:
        existing = Artifact.objects.filter(build=build, path=path).select_related("blob").first()
        if existing is None:
            raise usage.insert_refusal(build_id=build.pk, size=blob.size) or ArtifactConflict(
                f"{path} changed during the upload; retry it."
            )
        if existing.sha256 != blob.sha256:
            raise ArtifactConflict(
                f"{path} already holds different bytes (sha256 {existing.sha256}); "
                "artifacts are immutable."
            )
        return StoredArtifact(existing, created=False)
    artifact = Artifact(
        pk=pk, build=build, path=path, blob=blob, content_type=content_type[:255], created_at=now
    )
    return StoredArtifact(artifact, created=True)


@dataclass(frozen=True)
class _Published:
    """A blob row this upload created (so it may remove it again if the link fails)."""

    sha256: str
    storage_name: str


def _blob_publish(*, sha256: str, size: int, writer: storage.BlobWriter) -> _Published | None:
    """Publish the staged bytes and record the blob, before any lock is taken. If a blob of
    these bytes exists already (or another upload's won a race), it is marked referenced and
    ours is deleted at once: no row will ever name it. Returns what this created, if anything.
    """
    name = writer.commit(sha256=sha256)
    holder = Blob.objects.publish([(sha256, size, name)])[sha256]
    if holder == name:
        return _Published(sha256=sha256, storage_name=name)
    try:
        storage.blob_delete(name)
    except Exception:  # an orphan object costs space; failing the upload would cost more
        logger.exception("could not delete the duplicate object %s", name)
    return None


def _blob_unpublish(published: _Published) -> None:
    """The link failed: remove the blob this upload created, unless something references it
    by now. (If this fails, retention removes it after its grace period.)"""
    try:
        with transaction.atomic():
            blob = (
                Blob.objects.select_for_update()
                .filter(sha256=published.sha256, storage_name=published.storage_name)
                .first()
            )
            if blob is None or Artifact.objects.filter(blob=blob).exists():
                return
            blob.delete()
        storage.blob_delete(published.storage_name)
    except Exception:
        logger.exception("could not remove the unlinked blob %s", published.sha256)


# --- Retention ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    artifacts: int
    blobs: int
    staging_files: int
    usage_drifts: list = field(default_factory=list)


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
    # The usage counters follow the deleted rows (a trigger, artifacts/usage.py).
    expired = Artifact.objects.filter(build__in=builds_expired(now=now).filter(used_files__gt=0))
    _, deleted = expired.delete()
    referenced_before = now - timedelta(seconds=settings.ARTIFACT_BLOB_GRACE_SECONDS)
    candidates = Blob.objects.unreferenced().filter(referenced_at__lt=referenced_before)
    blobs = sum(
        blob_purge_if_unreferenced(sha256=sha256, referenced_before=referenced_before)
        for sha256 in candidates.values_list("sha256", flat=True).iterator()
    )
    staging = storage.staging_purge(older_than_seconds=settings.ARTIFACT_BLOB_GRACE_SECONDS)
    drifts = usage.usage_reconcile()
    return PurgeResult(
        artifacts=deleted.get("artifacts.Artifact", 0),
        blobs=blobs,
        staging_files=staging,
        usage_drifts=drifts,
    )
