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
from tokens.errors import InvalidCredential
from tokens.models import ApiKey
from tokens.services import key_alive

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


def checksum_clean(expected_sha256: str | None) -> str | None:
    if expected_sha256 is None:
        return None
    expected_sha256 = expected_sha256.strip().lower()
    if not SHA256_HEX.match(expected_sha256):
        raise ChecksumMismatch(
            "X-Checksum-Sha256 must be 64 hexadecimal characters.", code="invalid_checksum"
        )
    return expected_sha256


def _project_holds(*, project_id: int, sha256: str) -> bool:
    """Does one of the project's own artifacts already hold these bytes? Deliberately blind to
    other projects: what they store must not be observable here (docs/design.md, "Dedup")."""
    return Artifact.objects.filter(build__project_id=project_id, blob_id=sha256).exists()


def artifact_store(
    *,
    build: Build,
    path: str,
    stream,
    content_length: int | None,
    content_type: str = "",
    expected_sha256: str | None = None,
    key: ApiKey | None = None,
) -> StoredArtifact:
    """Stream a request body into the build's artifact at ``path``.

    Same bytes at the same path again: the existing artifact (created=False). Different bytes:
    ArtifactConflict. The bytes become visible only once their digest is verified and the
    artifact row is committed; any failure before that leaves nothing behind.

    Three steps, and none holds a lock across another: receive (stream into a staged object,
    hashing), ``blob_publish`` (make the staged bytes a blob: network calls, no transaction)
    and ``artifact_link`` (one statement that re-checks and links). ``key``, the key that sent
    the body, must still be alive when the artifact is linked. ``build`` comes loaded with its
    project: their usage counters refuse an upload over quota before a body byte is read.
    """
    path = artifact_path_clean(path)
    expected_sha256 = checksum_clean(expected_sha256)
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

    if expected_sha256 is not None and _project_holds(
        project_id=build.project_id, sha256=expected_sha256
    ):
        # Only the digest matters now: hash the body to verify it, store nothing.
        writer = storage.DiscardingWriter()
    else:
        writer = storage.blob_writer_open()

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
        published = None
        if not isinstance(writer, storage.DiscardingWriter):
            published = blob_publish(writer=writer, sha256=received.sha256, size=received.size)
    except BaseException:
        try:
            writer.abort()
        except Exception:  # the original error matters more than a failed cleanup
            logger.exception("could not discard a staged upload")
        raise
    try:
        return artifact_link(
            key=key,
            build=build,
            path=path,
            sha256=received.sha256,
            size=received.size,
            content_type=content_type or "application/octet-stream",
        )
    except BaseException:
        if published is not None and published.created:
            blob_discard_unlinked(blob=published.blob)
        raise


@dataclass(frozen=True)
class PublishedBlob:
    blob: Blob
    created: bool  # False: the bytes were stored already, this upload's copy was dropped


def blob_discard_unlinked(*, blob: Blob) -> None:
    """Undo a ``blob_publish`` whose link was refused, unless an upload of the same bytes has
    touched the blob since (it is about to link it): then retention decides, after its grace."""
    try:
        blob_purge_if_unreferenced(
            sha256=blob.sha256, referenced_before=blob.referenced_at + timedelta(microseconds=1)
        )
    except Exception:  # the refusal matters more; retention removes the blob later
        logger.exception("could not discard the unlinked blob %s", blob.sha256)


def blob_publish(*, writer: storage.BlobWriter, sha256: str, size: int) -> PublishedBlob:
    """Make the verified, staged bytes of ``writer`` the blob for ``sha256``.

    Runs outside any transaction and takes no lock: completing the staged upload is a network
    call that may take seconds (S3 assembles the parts), and no row lock may wait on it.
    The row is recorded with ``referenced_at`` now, so retention leaves it alone for its grace
    period while ``artifact_link`` links it. If the bytes are stored already (a concurrent upload
    of the same content published first), ours are a duplicate: deleted, and theirs is marked
    as referenced now. A crash between completing and recording leaves an object no row names;
    retention's reconciliation deletes it after the grace period.
    """
    name = writer.commit(sha256=sha256)
    now = timezone.now()
    # One statement: insert the row, or mark the existing one referenced (an upsert).
    holder = Blob.objects.publish([(sha256, size, name)], now=now)[sha256]
    if holder != name:
        try:
            storage.blob_delete(name)
        except Exception:  # an orphan object costs space (reconciliation removes it)
            logger.exception("could not delete the duplicate object %s", name)
    blob = Blob(sha256=sha256, size=size, storage_name=holder, referenced_at=now)
    return PublishedBlob(blob, created=holder == name)


def artifact_link(
    *,
    key: ApiKey | None,
    build: Build,
    path: str,
    sha256: str,
    content_type: str,
    size: int | None = None,
) -> StoredArtifact:
    """Link the stored blob ``sha256`` (of ``size`` bytes) as the build's artifact at ``path``.

    Re-checks what may have changed while the body streamed: the key (or one it came from) was
    revoked; then, in the one statement that inserts the row and counts it (usage.py), the
    build finished, a quota filled, a concurrent upload took the path. If retention removed the
    blob meanwhile, the foreign key refuses the row (503, retry). No lock outlives a statement.
    """
    if key is not None and not key_alive(key=key):
        raise InvalidCredential(
            "This API token was revoked or expired during the upload; nothing was stored.",
            code="revoked",
        )
    if size is None:
        size = Blob.objects.filter(sha256=sha256).values_list("size", flat=True).first()
        if size is None:
            raise BlobVanished()
    now = timezone.now()
    try:
        pk = usage.artifact_insert_within_quota(
            build_id=build.pk,
            path=path,
            sha256=sha256,
            size=size,
            content_type=content_type,
            created_at=now,
        )
    except IntegrityError as exc:  # the blob's row went (retention): the bytes must come again
        raise BlobVanished() from exc
    if pk is None:
        existing = Artifact.objects.filter(build=build, path=path).select_related("blob").first()
        if existing is None:
            raise usage.insert_refusal(build_id=build.pk, size=size) or ArtifactConflict(
                f"{path} changed during the upload; retry it."
            )
        if existing.sha256 != sha256:
            raise ArtifactConflict(
                f"{path} already holds different bytes (sha256 {existing.sha256}); "
                "artifacts are immutable."
            )
        return StoredArtifact(existing, created=False)
    artifact = Artifact(
        pk=pk,
        build=build,
        path=path,
        blob=Blob(sha256=sha256, size=size),
        content_type=content_type[:255],
        created_at=now,
    )
    return StoredArtifact(artifact, created=True)


# --- Retention ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    artifacts: int
    blobs: int
    staging_files: int
    uploads_aborted: int = 0
    orphans_deleted: int = 0
    unknown_objects: int = 0
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
    """Delete artifacts of builds past their project's retention, then unreferenced blobs;
    reconcile the storage with the blobs, and the usage counters with the artifacts."""
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
    reconciled = storage.storage_reconcile(
        known_names=_blob_names_known,
        older_than_seconds=settings.ARTIFACT_ORPHAN_GRACE_SECONDS,
        now=now.timestamp(),
    )
    return PurgeResult(
        artifacts=deleted.get("artifacts.Artifact", 0),
        blobs=blobs,
        staging_files=staging,
        uploads_aborted=reconciled.uploads_aborted,
        orphans_deleted=reconciled.orphans_deleted,
        unknown_objects=len(reconciled.unknown),
        usage_drifts=usage.usage_reconcile(),
    )


def _blob_names_known(names: list[str]) -> set[str]:
    return set(Blob.objects.filter(storage_name__in=names).values_list("storage_name", flat=True))
