"""Downstream status reports on a build (API.md "Downstream status"): writes and reads."""

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Subquery
from rest_framework.exceptions import ValidationError

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
    reporting back cannot start a loop. A build holds at most STATUS_CONTEXTS_PER_BUILD
    contexts and the latest STATUS_HISTORY_PER_CONTEXT reports of each, so a status key cannot
    make its build's rows, page or listing unbounded."""
    Build.objects.select_for_update().filter(pk=build.pk).first()  # serialises the check
    contexts = StatusCheck.objects.filter(build=build).values("context").distinct()
    limit = settings.STATUS_CONTEXTS_PER_BUILD
    if contexts.count() >= limit and not contexts.filter(context=context).exists():
        raise ValidationError(
            {"context": f"A build holds at most {limit} status contexts."}, code="too_many"
        )
    status = StatusCheck.objects.create(
        build=build,
        context=context,
        state=state,
        description=description,
        target_url=target_url,
        key=key,
    )
    # Only the latest STATUS_HISTORY_PER_CONTEXT reports of a context are kept: the cap on
    # contexts alone would let one context grow without end. Ids grow with time.
    older = (
        StatusCheck.objects.filter(build=build, context=context)
        .order_by("-id")
        .values_list("id", flat=True)[settings.STATUS_HISTORY_PER_CONTEXT :]
    )
    StatusCheck.objects.filter(pk__in=list(older)).delete()
    token_services.audit(
        action=AuditEvent.Action.STATUS,
        key=key,
        actor=f"key:{key.pk}",
        ip=ip,
        build=build,
        detail={"context": context, "state": str(state)},
    )
    return status


def statuses_latest(*, build: Build):
    """The latest status per context on ``build``, ordered by context: one query, however many
    reports a downstream made (ids grow with time, so the highest id is the latest)."""
    latest = (
        StatusCheck.objects.filter(build=build)
        .values("context")
        .annotate(last=Max("id"))
        .values("last")
    )
    return StatusCheck.objects.filter(pk__in=Subquery(latest)).order_by("context")
