from django.db import models
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from tokens import access


class BlobQuerySet(models.QuerySet):
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
