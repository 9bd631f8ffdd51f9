"""Warnings for long-lived keys about to expire."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import ApiKey, AuditEvent
from .minting import audit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExpiryWarning:
    key: ApiKey
    threshold_days: int
    # False when this threshold (or a closer one) was already recorded for the key.
    new: bool


def _expiry_reason(days: int) -> str:
    return f"expires within {days} days"


def key_expiry_warn(*, now: datetime | None = None) -> list[ExpiryWarning]:
    """Long-lived keys (deploy and project keys) expiring within a warning threshold.

    Each key is audited once per threshold (the closest one it has crossed); a deploy token
    already replaced by rotation is on its way out on purpose and is not reported.
    """
    now = now or timezone.now()
    thresholds = sorted(set(settings.KEY_EXPIRY_WARNING_DAYS))
    if not thresholds:
        return []
    keys = (
        ApiKey.objects.active()
        .filter(
            kind__in=[ApiKey.Kind.DEPLOY, ApiKey.Kind.PROJECT],
            expires_at__isnull=False,
            expires_at__lte=now + timedelta(days=thresholds[-1]),
            replaced_by__isnull=True,
        )
        .select_related("project")
        .order_by("expires_at", "pk")
    )
    warnings = []
    for key in keys:
        remaining = key.expires_at - now
        threshold = next(t for t in thresholds if remaining <= timedelta(days=t))
        with transaction.atomic():
            already = AuditEvent.objects.filter(
                key=key,
                action=AuditEvent.Action.EXPIRY_WARNING,
                reason__in=[_expiry_reason(t) for t in thresholds if t <= threshold],
            ).exists()
            if not already:
                audit(
                    action=AuditEvent.Action.EXPIRY_WARNING,
                    key=key,
                    reason=_expiry_reason(threshold),
                    detail={"expires_at": key.expires_at.isoformat(), "threshold_days": threshold},
                )
                logger.warning(
                    "%s of project %s expires at %s (within %s days): rotate it.",
                    key,
                    key.project.slug,
                    key.expires_at.isoformat(),
                    threshold,
                )
        warnings.append(ExpiryWarning(key, threshold, not already))
    return warnings
