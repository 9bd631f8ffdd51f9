"""Quota usage: bytes and files per build and per project, kept as counters on their rows.

Every path that adds artifacts charges the counters, and every path that removes them releases
them, in the same transaction as the rows, so a quota check reads one row instead of summing
all the project's artifacts (which grew with the project). Retention recomputes the counters
from the rows and repairs (and reports) any drift.

Invariant: a project's counters are the sum of its builds' counters.
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Sum
from django.db.models.functions import Coalesce

from builds.models import Build, Project

from .errors import BuildNotWritable, QuotaExceeded
from .models import Artifact

logger = logging.getLogger(__name__)


def _files_sentence() -> str:
    return f"A build may have at most {settings.BUILD_ARTIFACTS_MAX_FILES} artifacts."


def _build_bytes_sentence() -> str:
    return f"The build's artifacts may total at most {settings.BUILD_ARTIFACTS_QUOTA} bytes."


def _project_bytes_sentence() -> str:
    return f"The project's artifacts may total at most {settings.PROJECT_ARTIFACTS_QUOTA} bytes."


def usage_room(*, build: Build, files: int = 1) -> tuple[int, str]:
    """How many bytes ``files`` more artifacts of ``build`` may have together (negative: none,
    whatever their size), and the sentence saying why not, by the counters loaded with
    ``build`` and ``build.project``: no query. A hint to refuse early; ``usage_charge`` decides.
    """
    if build.used_files + files > settings.BUILD_ARTIFACTS_MAX_FILES:
        return -1, _files_sentence()
    max_size = settings.ARTIFACT_MAX_SIZE if files == 1 else None
    rooms = [
        (settings.BUILD_ARTIFACTS_QUOTA - build.used_bytes, _build_bytes_sentence()),
        (settings.PROJECT_ARTIFACTS_QUOTA - build.project.used_bytes, _project_bytes_sentence()),
    ]
    if max_size is not None:
        rooms.append((max_size, f"An artifact may be at most {max_size} bytes."))
    return min(rooms, key=lambda room: room[0])


def usage_charge(*, build_id: int, project_id: int, size: int, files: int = 1) -> None:
    """Count ``files`` artifacts of ``size`` bytes in all against the build and its project, in
    the caller's transaction; raise (and change nothing) if the build has finished or a quota
    would be exceeded.

    Each is one conditional UPDATE. On PostgreSQL it locks the row, and a concurrent upload
    waiting for that lock re-evaluates the WHERE on the row as committed (READ COMMITTED), so
    two uploads cannot both take the last room. The build's row is locked before the
    project's, the order every writer of both follows. On SQLite writers are serialised.
    """
    charged = Build.objects.filter(
        pk=build_id,
        state=Build.State.RUNNING,
        used_bytes__lte=settings.BUILD_ARTIFACTS_QUOTA - size,
        used_files__lte=settings.BUILD_ARTIFACTS_MAX_FILES - files,
    ).update(used_bytes=F("used_bytes") + size, used_files=F("used_files") + files)
    if not charged:
        raise _build_refusal(build_id=build_id, files=files)
    charged = Project.objects.filter(
        pk=project_id, used_bytes__lte=settings.PROJECT_ARTIFACTS_QUOTA - size
    ).update(used_bytes=F("used_bytes") + size, used_files=F("used_files") + files)
    if not charged:
        raise QuotaExceeded(_project_bytes_sentence())


def _build_refusal(*, build_id: int, files: int) -> Exception:
    """Why usage_charge could not charge the build (only on a refusal: one more query)."""
    build = Build.objects.filter(pk=build_id).values("state", "used_files").first()
    if build is None or build["state"] != Build.State.RUNNING:
        return BuildNotWritable()
    if build["used_files"] + files > settings.BUILD_ARTIFACTS_MAX_FILES:
        return QuotaExceeded(_files_sentence())
    return QuotaExceeded(_build_bytes_sentence())


def usage_release(*, build_id: int, project_id: int, size: int, files: int) -> None:
    """Take removed artifacts off the counters, in the transaction that removes them."""
    Build.objects.filter(pk=build_id).update(
        used_bytes=F("used_bytes") - size, used_files=F("used_files") - files
    )
    Project.objects.filter(pk=project_id).update(
        used_bytes=F("used_bytes") - size, used_files=F("used_files") - files
    )


def _totals(artifacts) -> tuple[int, int]:
    row = artifacts.aggregate(size=Coalesce(Sum("blob__size"), 0), files=Count("pk"))
    return row["size"], row["files"]


def build_artifacts_delete(*, build_id: int) -> int:
    """Delete all of a build's artifacts and release their usage; return how many."""
    with transaction.atomic():
        # The build's row lock keeps an upload from charging it while we count and delete.
        build = Build.objects.select_for_update().filter(pk=build_id).values("project_id")
        build = build.first()
        if build is None:
            return 0
        artifacts = Artifact.objects.filter(build_id=build_id)
        size, files = _totals(artifacts)
        if not files:
            return 0
        artifacts.delete()
        usage_release(build_id=build_id, project_id=build["project_id"], size=size, files=files)
        return files


def build_deleted_release(sender, instance: Build, **kwargs) -> None:
    """pre_delete of a Build (admin, or a project's cascade): its artifacts go with it, so the
    project's counters lose what the build's hold. The ORM's cascade bypasses the services,
    hence a receiver; it runs in the deleting transaction."""
    Project.objects.filter(pk=instance.project_id).update(
        used_bytes=F("used_bytes") - Build.objects.filter(pk=instance.pk).values("used_bytes"),
        used_files=F("used_files") - Build.objects.filter(pk=instance.pk).values("used_files"),
    )


# --- Reconciliation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageDrift:
    """A counter that did not match the rows; it now does."""

    kind: str  # "build" or "project"
    pk: int
    counted: tuple[int, int]  # (bytes, files) the counters said
    actual: tuple[int, int]  # (bytes, files) the artifacts add up to

    def __str__(self) -> str:
        return (
            f"{self.kind} {self.pk}: counted {self.counted[0]} bytes / {self.counted[1]} files, "
            f"stored {self.actual[0]} bytes / {self.actual[1]} files"
        )


def usage_reconcile() -> list[UsageDrift]:
    """Recompute every build's and project's usage from the artifact rows; repair and return
    the counters that had drifted (a bug, or rows removed behind the services' back).

    Compared first without locks, in one grouped query per level; only a counter that differs
    is recomputed again under its row's lock, so a concurrent upload is never mistaken for
    drift nor lost (it charges after we write, or we count its committed row).
    """
    drifts = []
    levels = [(Build, "build_id", "build_id"), (Project, "build__project_id", "build__project_id")]
    for model, group, field in levels:
        actual = {
            row[group]: (row["size"], row["files"])
            for row in Artifact.objects.values(group)
            .order_by()
            .annotate(size=Coalesce(Sum("blob__size"), 0), files=Count("pk"))
            .iterator()
        }
        counted = model.objects.values_list("pk", "used_bytes", "used_files").iterator()
        for pk, used_bytes, used_files in counted:
            if (used_bytes, used_files) != actual.get(pk, (0, 0)):
                drift = _repair(model=model, pk=pk, field=field)
                if drift is not None:
                    drifts.append(drift)
    for drift in drifts:
        logger.warning("usage counter drift repaired: %s", drift)
    return drifts


@transaction.atomic
def _repair(*, model, pk: int, field: str) -> UsageDrift | None:
    row = model.objects.select_for_update().filter(pk=pk).values("used_bytes", "used_files")
    row = row.first()
    if row is None:
        return None
    actual = _totals(Artifact.objects.filter(**{field: pk}))
    counted = (row["used_bytes"], row["used_files"])
    if counted == actual:
        return None
    model.objects.filter(pk=pk).update(used_bytes=actual[0], used_files=actual[1])
    kind = "build" if model is Build else "project"
    return UsageDrift(kind=kind, pk=pk, counted=counted, actual=actual)
