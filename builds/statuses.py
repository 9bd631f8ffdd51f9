"""Downstream status reports on a build (API.md "Downstream status"): writes and reads."""

from django.db import transaction

from tokens import services as token_services
from tokens.models import ApiKey, AuditEvent

from .models import Build, StatusCheck


@transaction.atomic
def status_report(
    *,
    build: Build,
    key: ApiKey,
    context: str,
    state: StatusCheck.State,
    description: str = "",
    target_url: str = "",
    ip: str | None = None,
) -> StatusCheck:
    """Record a downstream's verdict on ``build``; the latest per context is what shows.

    Reporting never triggers anything else (no webhook, no state change): a downstream
    reporting back cannot start a loop."""
    status = StatusCheck.objects.create(
        build=build,
        context=context,
        state=state,
        description=description,
        target_url=target_url,
        key=key,
    )
    token_services.audit(
        action=AuditEvent.Action.STATUS,
        key=key,
        actor=f"key:{key.pk}",
        ip=ip,
        build=build,
        detail={"context": context, "state": str(state)},
    )
    return status


def statuses_latest(*, build: Build) -> list[StatusCheck]:
    """The latest status per context on ``build``, ordered by context."""
    latest: dict[str, StatusCheck] = {}
    for status in build.statuses.order_by("-created_at", "-id"):
        latest.setdefault(status.context, status)
    return sorted(latest.values(), key=lambda s: s.context)
