from django.db import models
from django.db.models import Q
from django.utils import timezone


class Event(models.TextChoices):
    BUILD_SUCCEEDED = "build.succeeded", "build.succeeded"
    BUILD_FAILED = "build.failed", "build.failed"
    BUILD_CANCELED = "build.canceled", "build.canceled"
    PING = "ping", "ping"


# A finished build's state -> the event it announces.
BUILD_EVENTS = {
    "succeeded": Event.BUILD_SUCCEEDED,
    "failed": Event.BUILD_FAILED,
    "canceled": Event.BUILD_CANCELED,
}


class SubscriptionQuerySet(models.QuerySet):
    def active(self):
        return self.filter(active=True)


class Subscription(models.Model):
    """A downstream endpoint told about a project's finished builds.

    Secrets (signing secret, basic-auth password, SigV4 secret key) are stored encrypted
    (webhooks/crypto.py) and are never shown again after the response that created them.
    """

    project = models.ForeignKey(
        "builds.Project", on_delete=models.CASCADE, related_name="webhook_subscriptions"
    )
    url = models.CharField(
        max_length=2000,
        help_text="Target URL. https:// (optionally with basic auth) or https+sigv4:// (AWS "
        "SigV4, sent as https://, e.g. a Lambda function URL). Never credentials in the URL.",
    )
    events = models.JSONField(
        default=list, help_text="Events delivered: build.succeeded, build.failed, ... and ping."
    )
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(
        default=0, help_text="Deliveries in a row that exhausted their retries."
    )
    secret_encrypted = models.TextField(editable=False)
    previous_secrets = models.JSONField(
        default=list,
        blank=True,
        editable=False,
        help_text="Superseded signing secrets that still sign until their own grace ends, newest "
        'first: [{"secret_encrypted": ..., "expires_at": ISO 8601}], at most '
        "WEBHOOK_SECRET_PREVIOUS_MAX (webhooks/services.py).",
    )
    basic_auth_username = models.CharField(max_length=200, blank=True)
    basic_auth_password_encrypted = models.TextField(blank=True, editable=False)
    sigv4_access_key_id = models.CharField(max_length=128, blank=True)
    sigv4_secret_encrypted = models.TextField(blank=True, editable=False)
    sigv4_region = models.CharField(max_length=64, blank=True)
    sigv4_service = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SubscriptionQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.project.slug} -> {self.url}"

    @property
    def uses_sigv4(self) -> bool:
        return self.url.split("://", 1)[0].endswith("+sigv4")

    def wants(self, event: str) -> bool:
        return event in self.events


class DeliveryQuerySet(models.QuerySet):
    def due(self, now=None):
        """Pending, due, and not held by a running attempt (its lease lapsed or never taken)."""
        now = now or timezone.now()
        return self.filter(state=Delivery.State.PENDING, next_attempt_at__lte=now).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=now)
        )


class Delivery(models.Model):
    """One event for one subscription (the outbox row): retried until delivered or given up.

    ``webhook_id`` stays the same across attempts: it is the receiver's idempotency key."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        DELIVERED = "delivered", "delivered"
        FAILED = "failed", "failed"

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=32, choices=Event.choices)
    build = models.ForeignKey(
        "builds.Build", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    webhook_id = models.CharField(max_length=64, unique=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    schedule_index = models.PositiveIntegerField(
        default=0, help_text="Attempts made in the current round (a redelivery starts anew)."
    )
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    read_key = models.ForeignKey(
        "tokens.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The read-only key this delivery's links are signed under (revocable alone).",
    )
    status_key = models.ForeignKey(
        "tokens.ApiKey",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The build:status key handed to the downstream in the payload.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event} {self.webhook_id}"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(
        blank=True, help_text="The start of the response body (capped; shown escaped)."
    )
    error = models.CharField(max_length=500, blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status_code or self.error}"
