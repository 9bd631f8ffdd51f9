from django.db import connections, models
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from tokens import access


def _quoted(model, *fields: str) -> tuple[str, list[str]]:
    """The model's quoted table name and the quoted columns of ``fields`` on its connection."""
    q = connections[model.objects.db].ops.quote_name
    meta = model._meta
    return q(meta.db_table), [q(meta.get_field(name).column) for name in fields]


def _returning_insert(model, fields: list[str], rows: list[tuple], conflict: str) -> list[tuple]:
    """``INSERT ... VALUES (rows) <conflict> RETURNING ...`` in one statement (PostgreSQL and
    SQLite >= 3.35 both speak it). Used on the upload path, where the ORM cannot say
    "insert unless present, and tell me what happened" in one round trip."""
    connection = connections[model.objects.db]
    table, columns = _quoted(model, *fields)
    adapt = {
        name: connection.ops.adapt_datetimefield_value
        for name in fields
        if model._meta.get_field(name).get_internal_type() == "DateTimeField"
    }
    adapted = {}  # rows of a batch share their timestamps: each is adapted once
    values = []
    for row in rows:
        for name, value in zip(fields, row, strict=True):
            if name in adapt:
                if value not in adapted:
                    adapted[value] = adapt[name](value)
                value = adapted[value]
            values.append(value)
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * len(rows))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {placeholders} {conflict}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.fetchall()


class BlobQuerySet(models.QuerySet):
    def publish(self, blobs: list[tuple[str, int, str]], *, now=None) -> dict[str, str]:
        """Record ``(sha256, size, storage_name)`` blobs, or where a blob of that digest exists
        already, mark it referenced now instead. Returns, per digest, the storage name of the
        row that holds the bytes: the one given if this inserted it.

        One statement. On PostgreSQL the upsert also takes the existing row's lock, ordering it
        against retention (which deletes a blob only under that lock, if it is old enough).
        """
        now = now or timezone.now()
        _, (referenced_at, sha_column, name_column) = _quoted(
            Blob, "referenced_at", "sha256", "storage_name"
        )
        rows = _returning_insert(
            Blob,
            ["sha256", "size", "storage_name", "created_at", "referenced_at"],
            [(sha256, size, name, now, now) for sha256, size, name in blobs],
            f"ON CONFLICT ({sha_column}) DO UPDATE SET {referenced_at} = excluded.{referenced_at} "
            f"RETURNING {sha_column}, {name_column}",
        )
        return dict(rows)

    def with_reference_count(self):
        return self.annotate(reference_count=Count("artifacts"))

    def unreferenced(self):
        return self.filter(artifacts__isnull=True)


class Blob(models.Model):
    """Content-addressed bytes: the same file uploaded by many builds is stored once."""

    sha256 = models.CharField(max_length=64, primary_key=True, help_text="Lowercase hex SHA-256.")
    size = models.BigIntegerField(help_text="Bytes.")
    storage_name = models.CharField(
        max_length=255, unique=True, help_text="Object name in the artifact storage."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    referenced_at = models.DateTimeField(
        default=timezone.now,
        help_text="Last time an upload linked (or began to link) these bytes. Retention keeps an "
        "unreferenced blob for a grace period after this, so an upload of the same bytes in "
        "flight never loses it.",
    )

    objects = BlobQuerySet.as_manager()

    def __str__(self) -> str:
        return self.sha256


class ArtifactQuerySet(models.QuerySet):
    def insert_new(self, rows: list[dict], *, created_at) -> dict[str, int]:
        """Insert artifacts (dicts of build_id, path, blob_id, content_type) unless their path
        is taken in their build; return the ids of those inserted, by path. One statement."""
        _, (build_column, path_column, id_column) = _quoted(Artifact, "build", "path", "id")
        fields = ["build", "path", "blob", "content_type", "created_at"]
        inserted = _returning_insert(
            Artifact,
            fields,
            [
                (r["build_id"], r["path"], r["blob_id"], r["content_type"][:255], created_at)
                for r in rows
            ],
            f"ON CONFLICT ({build_column}, {path_column}) DO NOTHING "
            f"RETURNING {path_column}, {id_column}",
        )
        return dict(inserted)

    def total_size(self) -> int:
        """Logical bytes (a blob shared by two artifacts counts twice: quotas are per use)."""
        return self.aggregate(total=Coalesce(Sum("blob__size"), 0))["total"]

    def with_prefix(self, prefix: str):
        return access.under_prefix(self, prefix)


class Artifact(models.Model):
    """A path in a build, pointing at a blob. Immutable once written."""

    build = models.ForeignKey("builds.Build", on_delete=models.CASCADE, related_name="artifacts")
    path = models.CharField(max_length=1024)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="artifacts")
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ArtifactQuerySet.as_manager()

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["build", "path"], name="artifact_path_per_build")
        ]

    def __str__(self) -> str:
        return self.path

    @property
    def size(self) -> int:
        return self.blob.size

    @property
    def sha256(self) -> str:
        return self.blob.sha256


class ShareQuerySet(models.QuerySet):
    def for_build(self, build):
        return self.filter(build=build)


class Share(models.Model):
    """Signed links handed out for a build, all signed under one derived key of their own:
    revoking that key withdraws every link of the share, and nothing else."""

    build = models.ForeignKey("builds.Build", on_delete=models.CASCADE, related_name="shares")
    key = models.OneToOneField(
        "tokens.ApiKey",
        on_delete=models.CASCADE,
        related_name="share",
        help_text="The read-only key the links are signed under; revoke it to withdraw them.",
    )
    shared_by = models.ForeignKey(
        "tokens.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The key that asked for the share.",
    )
    paths = models.JSONField(
        default=list, blank=True, help_text="The shared paths; empty means all under the prefix."
    )
    prefix = models.CharField(
        max_length=1024, blank=True, help_text="Only artifacts under this path are shared."
    )
    expires_at = models.DateTimeField(help_text="When the links stop working.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ShareQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"share of {self.build_id} by key {self.shared_by_id}"
