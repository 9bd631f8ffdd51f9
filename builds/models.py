from django.db import models
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from artifactcourier.parsers import validate_json_value
from tokens import access


class Project(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200, blank=True)
    deploy_tokens_enabled = models.BooleanField(
        default=False,
        help_text="Opt in to a long-lived, read-only deploy token for CD systems. It is handed to "
        "every new build's runner to pass on.",
    )
    untrusted_webhooks = models.BooleanField(
        default=False,
        help_text="Also send downstream webhooks for untrusted builds (forks, pull requests).",
    )
    retention_days = models.PositiveIntegerField(
        default=90, help_text="Builds' artifacts (and build keys) expire after this many days."
    )
    build_counter = models.PositiveIntegerField(default=0, editable=False)
    # Quota usage, kept in step with the artifact rows by a database trigger in the statement
    # that adds or removes them (artifacts/usage.py), so checking a quota reads one row instead
    # of summing artifacts; retention recomputes them and reports any drift.
    used_bytes = models.BigIntegerField(
        default=0,
        editable=False,
        help_text="Bytes of all its artifacts (a blob shared by two counts twice).",
    )
    used_files = models.BigIntegerField(
        default=0, editable=False, help_text="Number of its artifacts."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class BuildQuerySet(models.QuerySet):
    def with_totals(self, *, path_prefix: str = ""):
        """With ``path_prefix`` (a key limited to a prefix), annotate artifact_count and
        total_size of the artifacts under it only, so a key never learns how much lies outside
        what it may read. Without, the build's usage counters are its totals: no annotation."""
        if path_prefix:
            Artifact = self.model._meta.get_field("artifacts").related_model
            visible = access.under_prefix(
                Artifact.objects.filter(build=OuterRef("pk")).order_by(), path_prefix
            ).values("build")
            return self.annotate(
                artifact_count=Coalesce(Subquery(visible.annotate(n=Count("pk")).values("n")), 0),
                total_size=Coalesce(Subquery(visible.annotate(s=Sum("blob__size")).values("s")), 0),
            )
        return self


class Build(models.Model):
    class State(models.TextChoices):
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"
        CANCELED = "canceled", "canceled"

    FINAL_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="builds")
    number = models.PositiveIntegerField(help_text="Sequential per project.")
    ref = models.CharField(max_length=255, blank=True)
    commit = models.CharField(max_length=64, blank=True)
    trusted = models.BooleanField(
        default=True,
        help_text="False for forks' pull requests: their keys cannot mint, and no downstream "
        "webhooks fire unless the project allows it.",
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    # The API's JSON checks also hold for an edit in the admin: no lone surrogate, bounded depth.
    metadata = models.JSONField(default=dict, blank=True, validators=[validate_json_value])
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Quota usage, kept in step with the artifact rows by a database trigger in the statement
    # that adds or removes them (artifacts/usage.py), so checking a quota reads one row instead
    # of summing artifacts; retention recomputes them and reports any drift.
    used_bytes = models.BigIntegerField(
        default=0,
        editable=False,
        help_text="Bytes of all its artifacts (a blob shared by two counts twice).",
    )
    used_files = models.BigIntegerField(
        default=0, editable=False, help_text="Number of its artifacts."
    )

    objects = BuildQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="build_number_per_project")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}#{self.number}"

    @property
    def is_running(self) -> bool:
        return self.state == self.State.RUNNING


class StatusCheck(models.Model):
    """A downstream verdict on a build, like a commit status."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        SUCCESS = "success", "success"
        FAILURE = "failure", "failure"
        ERROR = "error", "error"

    build = models.ForeignKey(Build, on_delete=models.CASCADE, related_name="statuses")
    context = models.CharField(max_length=255)
    state = models.CharField(max_length=16, choices=State.choices)
    description = models.CharField(max_length=1000, blank=True)
    target_url = models.URLField(max_length=2000, blank=True)
    key = models.ForeignKey(
        "tokens.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["build", "context", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.context}: {self.state}"
