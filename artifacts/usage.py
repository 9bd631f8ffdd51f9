"""Quota usage: bytes and files per build and per project, kept as counters on their rows.

A database trigger on the artifact table (migration 0005) adds every inserted artifact to its
build's and project's counters and takes every deleted one off, in the statement that inserts
or deletes it. That covers each path rows come and go by, the ORM's cascades and bulk deletes
included, which no Python hook sees reliably. A quota check then reads one row instead of
summing all the project's artifacts (which grew with the project). Retention recomputes the
counters from the rows and repairs (and reports) any drift.

Invariant: a project's counters are the sum of its builds' counters.
"""

import logging
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce

from builds.models import Build, Project

from .errors import BuildNotWritable, QuotaExceeded
from .models import Artifact

logger = logging.getLogger(__name__)


def files_sentence() -> str:
    return f"A build may have at most {settings.BUILD_ARTIFACTS_MAX_FILES} artifacts."


def build_bytes_sentence() -> str:
    return f"The build's artifacts may total at most {settings.BUILD_ARTIFACTS_QUOTA} bytes."


def project_bytes_sentence() -> str:
    return f"The project's artifacts may total at most {settings.PROJECT_ARTIFACTS_QUOTA} bytes."


def usage_room(*, build: Build, files: int = 1) -> tuple[int, str]:
    """How many bytes ``files`` more artifacts of ``build`` may have together (negative: none,
    whatever their size), and the sentence saying why not, by the counters loaded with
    ``build`` and ``build.project``: no query. A hint to refuse early; ``usage_charge`` decides.
    """
    if build.used_files + files > settings.BUILD_ARTIFACTS_MAX_FILES:
        return -1, files_sentence()
    max_size = settings.ARTIFACT_MAX_SIZE if files == 1 else None
    rooms = [
        (settings.BUILD_ARTIFACTS_QUOTA - build.used_bytes, build_bytes_sentence()),
        (settings.PROJECT_ARTIFACTS_QUOTA - build.project.used_bytes, project_bytes_sentence()),
    ]
    if max_size is not None:
        rooms.append((max_size, f"An artifact may be at most {max_size} bytes."))
    return min(rooms, key=lambda room: room[0])


class _LinkStatement:
    """``INSERT`` one artifact only if its build runs and both quotas have room for it, and
    the path is free; ``RETURNING`` its id. Composed once per connection from the models'
    metadata (the upload path's compilation cost), so the columns stay in step with them.

    The check and the insert are one statement, and the trigger counts the row in it. On
    PostgreSQL the build's and project's rows are locked (``FOR NO KEY UPDATE``, build first)
    before the quota is read: a concurrent upload waits, then re-evaluates the condition on
    the rows as committed (READ COMMITTED), so two uploads cannot both take the last room.
    SQLite runs one writer at a time.
    """

    @classmethod
    @cache
    def for_connection(cls, alias: str, vendor: str) -> "_LinkStatement":
        return cls(connections[alias])

    def __init__(self, connection) -> None:
        q = connection.ops.quote_name
        a, b, p = Artifact._meta, Build._meta, Project._meta

        def col(meta, name: str) -> str:
            return q(meta.get_field(name).column)

        lock = "FOR NO KEY UPDATE OF b, p" if connection.vendor == "postgresql" else ""
        columns = ", ".join(col(a, n) for n in ["build", "path", "blob", "content_type"])
        self.sql = (
            f"INSERT INTO {q(a.db_table)} ({columns}, {col(a, 'created_at')}) "  # noqa: S608
            f"SELECT b.{q(b.pk.column)}, %s, %s, %s, %s "
            f"FROM {q(b.db_table)} b INNER JOIN {q(p.db_table)} p "
            f"ON p.{q(p.pk.column)} = b.{col(b, 'project')} "
            f"WHERE b.{q(b.pk.column)} = %s AND b.{col(b, 'state')} = %s "
            f"AND b.{col(b, 'used_files')} + 1 <= %s AND b.{col(b, 'used_bytes')} + %s <= %s "
            f"AND p.{col(p, 'used_bytes')} + %s <= %s {lock} "
            f"ON CONFLICT ({col(a, 'build')}, {col(a, 'path')}) DO NOTHING "
            f"RETURNING {q(a.pk.column)}"
        )

    def execute(self, connection, *, build_id, path, sha256, size, content_type, created_at):
        params = [
            path,
            sha256,
            content_type[:255],
            connection.ops.adapt_datetimefield_value(created_at),
            build_id,
            Build.State.RUNNING.value,
            settings.BUILD_ARTIFACTS_MAX_FILES,
            size,
            settings.BUILD_ARTIFACTS_QUOTA,
            size,
            settings.PROJECT_ARTIFACTS_QUOTA,
        ]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
        return None if row is None else row[0]


def artifact_insert_within_quota(
    *, build_id: int, path: str, sha256: str, size: int, content_type: str, created_at
) -> int | None:
    """Insert the artifact and count it, in one statement; its id, or None if nothing was
    inserted (see ``insert_refusal`` for why)."""
    connection = connections[Artifact.objects.db]
    statement = _LinkStatement.for_connection(connection.alias, connection.vendor)
    return statement.execute(
        connection,
        build_id=build_id,
        path=path,
        sha256=sha256,
        size=size,
        content_type=content_type,
        created_at=created_at,
    )


def insert_refusal(*, build_id: int, size: int, files: int = 1) -> Exception | None:
    """Why a build could not take ``files`` more artifacts of ``size`` bytes in all, or None if
    it could (so what stopped the insert was the path being taken). Only on a refusal."""
    build = Build.objects.filter(pk=build_id).values(
        "state", "used_files", "used_bytes", "project__used_bytes"
    )
    build = build.first()
    if build is None or build["state"] != Build.State.RUNNING:
        return BuildNotWritable()
    if build["used_files"] + files > settings.BUILD_ARTIFACTS_MAX_FILES:
        return QuotaExceeded(files_sentence())
    if build["used_bytes"] + size > settings.BUILD_ARTIFACTS_QUOTA:
        return QuotaExceeded(build_bytes_sentence())
    if build["project__used_bytes"] + size > settings.PROJECT_ARTIFACTS_QUOTA:
        return QuotaExceeded(project_bytes_sentence())
    return None


def _totals(artifacts) -> tuple[int, int]:
    row = artifacts.aggregate(size=Coalesce(Sum("blob__size"), 0), files=Count("pk"))
    return row["size"], row["files"]


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
