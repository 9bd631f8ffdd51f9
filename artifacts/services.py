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
from tokens.errors import InvalidCredential
from tokens.models import ApiKey
from tokens.services import key_alive

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

    Three steps, and only the last takes locks: receive (stream into a staged object, hashing),
    ``blob_publish`` (make the staged bytes a blob: network calls, no transaction) and
    ``artifact_link`` (under the build's and project's row locks, re-check and link). ``key``,
    the key that sent the body, must still be alive when the artifact is linked.
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

    if existing is not None or (
        expected_sha256 is not None
        and _project_holds(project_id=build.project_id, sha256=expected_sha256)
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
    try:
        with transaction.atomic():
            blob = Blob.objects.create(sha256=sha256, size=size, storage_name=name)
        return PublishedBlob(blob, created=True)
    except IntegrityError:
        pass
    try:
        storage.blob_delete(name)
    except Exception:  # an orphan object costs space (reconciliation removes it); not the upload
        logger.exception("could not delete the duplicate object %s", name)
    Blob.objects.filter(sha256=sha256).update(referenced_at=timezone.now())
    blob = Blob.objects.filter(sha256=sha256).first()
    if blob is None:  # purged in between: vanishingly rare; a retry stores it again
        raise BlobVanished()
    return PublishedBlob(blob, created=False)


@transaction.atomic
def artifact_link(
    *,
    key: ApiKey | None,
    build: Build,
    path: str,
    sha256: str,
    content_type: str,
) -> StoredArtifact:
    """Link the stored blob ``sha256`` as the build's artifact at ``path``.

    Under the build's row lock (and the project's, for its quota) re-checks what may have
    changed while the body streamed: the build finished, the key (or one it came from) was
    revoked, a concurrent upload took the path, quotas, a purge of the blob. No network call
    happens here: every lock taken is released within a few queries.
    """
    build = Build.objects.select_for_update().get(pk=build.pk)
    if not build.is_running:
        raise BuildNotWritable()
    if key is not None and not key_alive(key=key):
        raise InvalidCredential(
            "This API token was revoked during the upload; nothing was stored.", code="revoked"
        )
    existing = Artifact.objects.filter(build=build, path=path).select_related("blob").first()
    if existing is not None:
        if existing.sha256 != sha256:
            raise ArtifactConflict(
                f"{path} already holds different bytes; artifacts are immutable."
            )
        return StoredArtifact(existing, created=False)
    # The project's row orders the quota checks of all its builds' uploads: under the build's
    # lock alone, two builds could each see room for one more artifact and both take it.
    Project.objects.select_for_update(no_key=True).get(pk=build.project_id)
    # Locking the blob row orders us against retention: it deletes a blob only under this lock
    # and only if nothing references it, so once we hold it the blob stays.
    blob = Blob.objects.select_for_update().filter(sha256=sha256).first()
    if blob is None:
        raise BlobVanished()
    _check_quota(build=build, size=blob.size)
    Blob.objects.filter(pk=blob.pk).update(referenced_at=timezone.now())
    artifact = Artifact.objects.create(
        build=build, path=path, blob=blob, content_type=content_type[:255]
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
    )


def _blob_names_known(names: list[str]) -> set[str]:
    return set(Blob.objects.filter(storage_name__in=names).values_list("storage_name", flat=True))
