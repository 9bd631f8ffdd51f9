"""Subscriptions, the outbox and sending deliveries (DESIGN.md "Webhooks").

Writes happen here; views, admin actions and tasks call these functions. Sending is built so
that a task run twice, or killed mid-way, neither sends an attempt it should not nor records a
failure as a success: an attempt first takes a lease on its delivery (one UPDATE that only one
caller can win), and its outcome is applied only while that lease is still its own.
"""

import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from builds.models import Build, Project
from tokens import services as token_services
from tokens.logging import redact
from tokens.models import ApiKey, AuditEvent
from tokens.scopes import Scope

from . import crypto, transport
from .errors import InvalidSubscription
from .links import links_mint
from .models import BUILD_EVENTS, Delivery, DeliveryAttempt, Event, Subscription

logger = logging.getLogger(__name__)


# --- subscriptions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedSubscription:
    subscription: Subscription
    signing_secret: str  # shown once


def _validate(*, url: str, basic_auth: dict | None, sigv4: dict | None) -> transport.ParsedUrl:
    try:
        parsed = transport.url_parse(url)
    except transport.InvalidTargetUrl as error:
        raise InvalidSubscription({"url": str(error)}, code=error.code) from None
    if parsed.sigv4 and not sigv4:
        raise InvalidSubscription(
            {"sigv4": "An https+sigv4:// URL needs the sigv4 credentials."}, code="invalid"
        )
    if sigv4 and not parsed.sigv4:
        raise InvalidSubscription(
            {"url": "SigV4 credentials go with an https+sigv4:// URL."}, code="invalid"
        )
    if sigv4 and basic_auth:
        raise InvalidSubscription(
            {"basic_auth": "Use either basic auth or SigV4, not both."}, code="invalid"
        )
    return parsed


@transaction.atomic
def subscription_create(
    *,
    project: Project,
    url: str,
    events: list[str],
    basic_auth: dict | None = None,
    sigv4: dict | None = None,
) -> CreatedSubscription:
    _validate(url=url, basic_auth=basic_auth, sigv4=sigv4)
    secret = crypto.signing_secret_generate()
    basic_auth, sigv4 = basic_auth or {}, sigv4 or {}
    subscription = Subscription.objects.create(
        project=project,
        url=url,
        events=sorted(set(events)),
        secret_encrypted=crypto.encrypt(secret),
        basic_auth_username=basic_auth.get("username", ""),
        basic_auth_password_encrypted=crypto.encrypt(basic_auth.get("password", "")),
        sigv4_access_key_id=sigv4.get("access_key_id", ""),
        sigv4_secret_encrypted=crypto.encrypt(sigv4.get("secret_access_key", "")),
        sigv4_region=sigv4.get("region", ""),
        sigv4_service=sigv4.get("service", ""),
    )
    if subscription.wants(Event.PING):
        ping_send(subscription=subscription)
    return CreatedSubscription(subscription, secret)


@dataclass(frozen=True)
class RotatedSecret:
    signing_secret: str  # shown once
    previous_secret_expires_at: datetime  # when the secret just superseded stops signing


def _previous_max() -> int:
    return max(0, settings.WEBHOOK_SECRET_PREVIOUS_MAX)


def superseded_secrets(subscription: Subscription, now: datetime) -> list[tuple[str, datetime]]:
    """The superseded secrets whose grace has not ended, newest first: (encrypted, expires_at).

    At most WEBHOOK_SECRET_PREVIOUS_MAX, also when the setting was lowered since they were kept."""
    found = []
    for entry in subscription.previous_secrets:
        expires_at = datetime.fromisoformat(entry["expires_at"])
        if expires_at > now:
            found.append((entry["secret_encrypted"], expires_at))
    return found[: _previous_max()]


@transaction.atomic
def subscription_rotate_secret(*, subscription: Subscription) -> RotatedSecret:
    """A new signing secret (returned once); the current one keeps signing alongside it for
    WEBHOOK_SECRET_ROTATION_GRACE_SECONDS, so receivers can switch without missing a delivery
    (Standard Webhooks allows several space-separated signatures).

    Every superseded secret signs until its own grace ends, however many rotations follow;
    expired ones are dropped here. At most WEBHOOK_SECRET_PREVIOUS_MAX are kept (the header and
    the row stay bounded): beyond that the oldest stops signing before its grace ends."""
    subscription = Subscription.objects.select_for_update().get(pk=subscription.pk)
    secret = crypto.signing_secret_generate()
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.WEBHOOK_SECRET_ROTATION_GRACE_SECONDS)
    kept = [(subscription.secret_encrypted, expires_at), *superseded_secrets(subscription, now)]
    kept = kept[: _previous_max()]
    subscription.previous_secrets = [
        {"secret_encrypted": encrypted, "expires_at": _iso(expires)} for encrypted, expires in kept
    ]
    subscription.secret_encrypted = crypto.encrypt(secret)
    subscription.save(update_fields=["previous_secrets", "secret_encrypted"])
    # With WEBHOOK_SECRET_PREVIOUS_MAX = 0 the superseded secret stops signing at once.
    return RotatedSecret(secret, expires_at if kept else now)


def _delivery_keys_revoke(*, subscription: Subscription, reason: str, actor: str) -> None:
    ids = set()
    for read_id, status_id in subscription.deliveries.values_list("read_key", "status_key"):
        ids.update(i for i in (read_id, status_id) if i is not None)
    for key in ApiKey.objects.filter(pk__in=ids, revoked_at__isnull=True):
        token_services.key_revoke(key=key, reason=reason, actor=actor)


@transaction.atomic
def subscription_delete(*, subscription: Subscription, actor: str) -> None:
    """Delete a subscription; the keys its deliveries handed out are revoked with it."""
    _delivery_keys_revoke(subscription=subscription, reason="subscription deleted", actor=actor)
    subscription.delete()


@transaction.atomic
def subscription_disable(*, subscription: Subscription, reason: str) -> bool:
    """Disable (no further deliveries) and audit why; False if it already was disabled."""
    changed = Subscription.objects.filter(pk=subscription.pk, active=True).update(
        active=False, disabled_reason=reason[:300], disabled_at=timezone.now()
    )
    if changed:
        token_services.audit(
            action=AuditEvent.Action.WEBHOOK_DISABLED,
            project=subscription.project,
            reason=reason[:200],
            detail={"subscription": subscription.pk, "url": subscription.url},
        )
        # Deliveries still waiting for a retry stop here.
        subscription.deliveries.filter(state=Delivery.State.PENDING).update(
            state=Delivery.State.FAILED, last_error=f"subscription disabled: {reason}"[:500]
        )
    return bool(changed)


@transaction.atomic
def subscription_enable(*, subscription: Subscription) -> None:
    Subscription.objects.filter(pk=subscription.pk).update(
        active=True, disabled_reason="", disabled_at=None, consecutive_failures=0
    )


# --- the outbox -------------------------------------------------------------------------------


def _webhook_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def deliveries_create_for_build(*, build: Build) -> list[int]:
    """Outbox rows for every active subscription of the build's project that wants this event.

    Called inside build_finish's transaction (webhooks/handlers.py): the rows commit with the
    state change or not at all; the send tasks are queued once it commits."""
    event = BUILD_EVENTS[build.state]
    candidates = Subscription.objects.active().filter(project_id=build.project_id)
    subscriptions = [s for s in candidates if s.wants(event)]
    now = timezone.now()
    rows = Delivery.objects.bulk_create(
        Delivery(
            subscription=s,
            event=event,
            build=build,
            webhook_id=_webhook_id(),
            occurred_at=now,
            next_attempt_at=now,
        )
        for s in subscriptions
    )
    ids = [row.pk for row in rows]
    if not ids or ids[0] is None:  # backends that do not return ids from bulk_create
        ids = list(Delivery.objects.filter(build=build, event=event).values_list("pk", flat=True))
    if ids:
        transaction.on_commit(lambda: deliveries_dispatch(ids=ids))
    return ids


# Up to this many send tasks are queued by the finishing request itself; more are handed to
# one dispatch task, so a build with hundreds of subscribers still finishes in one publish.
DISPATCH_INLINE_MAX = 10


def deliveries_dispatch(*, ids: list[int]) -> None:
    if len(ids) <= DISPATCH_INLINE_MAX:
        deliveries_enqueue(ids=ids)
        return
    from .tasks import deliveries_dispatch_task

    try:
        deliveries_dispatch_task.apply_async((ids,), retry=False)
    except Exception as error:
        logger.warning("webhook dispatch of %d deliveries not queued (%s)", len(ids), error)


def ping_send(*, subscription: Subscription) -> Delivery:
    """Queue a ping to ``subscription`` (on creation when it asks for pings, and from the admin)."""
    delivery = Delivery.objects.create(
        subscription=subscription, event=Event.PING, webhook_id=_webhook_id()
    )
    transaction.on_commit(lambda: deliveries_enqueue(ids=[delivery.pk]))
    return delivery


def deliveries_enqueue(*, ids: list[int], countdown: float = 0) -> int:
    """Queue the send task for ``ids``; returns how many were queued.

    A broker that is down loses nothing: the rows stay due and unqueued, and the sweeper
    (deliveries_sweep) queues them once it is back."""
    from .tasks import delivery_send_task

    queued = []
    for pk in ids:
        try:
            delivery_send_task.apply_async((pk,), countdown=countdown or None, retry=False)
        except Exception as error:
            logger.warning("webhook delivery %s not queued (%s); the sweeper will", pk, error)
            break
        queued.append(pk)
    if queued:
        Delivery.objects.filter(pk__in=queued).update(enqueued_at=timezone.now())
    return len(queued)


def deliveries_sweep(*, limit: int = 1000) -> int:
    """Queue deliveries that are due, not held by an attempt, and not queued recently (their
    message was lost with the broker, or its worker died)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.WEBHOOK_REQUEUE_AFTER_SECONDS)
    ids = list(
        Delivery.objects.due(now)
        .filter(subscription__active=True)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=stale))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    return deliveries_enqueue(ids=ids) if ids else 0


@transaction.atomic
def delivery_redeliver(*, delivery: Delivery) -> None:
    """Send again (same webhook-id, a new round of retries), e.g. after the receiver was fixed."""
    Delivery.objects.filter(pk=delivery.pk).update(
        state=Delivery.State.PENDING,
        schedule_index=0,
        next_attempt_at=timezone.now(),
        lease_until=None,
        enqueued_at=None,
        last_error="",
    )
    transaction.on_commit(lambda: deliveries_enqueue(ids=[delivery.pk]))


# --- sending ----------------------------------------------------------------------------------


def _lease_take(delivery_id: int) -> str | None:
    """Take the delivery for one attempt, if it is due and nobody holds it. One UPDATE: of two
    runs of the same task, one wins; a lease outlives the task's hard time limit, so it lapses
    only when its holder is gone (then the sweeper queues the delivery again)."""
    now = timezone.now()
    token = secrets.token_hex(16)
    taken = (
        Delivery.objects.due(now)
        .filter(pk=delivery_id, subscription__active=True)
        .update(
            lease_token=token,
            lease_until=now + timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS),
        )
    )
    return token if taken else None


def _keys_for(delivery: Delivery) -> tuple[ApiKey, ApiKey]:
    """The delivery's read key and status key, derived on its first attempt."""
    if delivery.read_key_id and delivery.status_key_id:
        return delivery.read_key, delivery.status_key
    name = f"webhook subscription {delivery.subscription_id}"
    actor = f"webhook:{delivery.subscription_id}"
    with transaction.atomic():
        read_key, status_key = token_services.keys_derive_for_downstream(
            build=delivery.build,
            scope_sets=[[Scope.ARTIFACTS_READ], [Scope.BUILD_STATUS]],
            name=name,
            actor=actor,
        )
        Delivery.objects.filter(pk=delivery.pk).update(read_key=read_key, status_key=status_key)
    return read_key, status_key


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def payload_build(*, delivery: Delivery, now: datetime) -> dict:
    """The body of one attempt (API.md "Webhooks"). Links are minted for this attempt."""
    subscription = delivery.subscription
    project = subscription.project
    body = {"type": delivery.event, "timestamp": _iso(delivery.occurred_at)}
    if delivery.event == Event.PING:
        body["data"] = {"project": project.slug, "subscription": subscription.pk}
        return body
    build = delivery.build
    base = settings.PUBLIC_BASE_URL
    read_key, status_key = _keys_for(delivery)
    expires_at = now + timedelta(seconds=settings.WEBHOOK_LINK_EXPIRES_SECONDS)
    links = links_mint(
        key=read_key,
        build=build,
        expires_at=expires_at,
        base_url=base,
        limit=settings.WEBHOOK_PAYLOAD_MAX_ARTIFACTS,
    )
    body["data"] = {
        "project": project.slug,
        "build": {
            "id": build.pk,
            "number": build.number,
            "ref": build.ref,
            "commit": build.commit,
            "state": build.state,
            "url": f"{base}/api/v1/builds/{build.pk}/",
        },
        "artifacts": links.artifacts,
        # True: the build holds more than the payload lists; the listing (paged) has them all.
        "artifacts_truncated": links.truncated,
        "listing_url": links.url,
        "links_expire_at": _iso(links.expires_at),
        "status_url": f"{base}/api/v1/builds/{build.pk}/statuses/",
        "status_token": token_services.key_token(status_key),
    }
    return body


def _signing_secrets(subscription: Subscription, now: datetime) -> list[str]:
    """The current secret, then the superseded ones still within their grace, newest first."""
    current = crypto.decrypt(subscription.secret_encrypted)
    return [current, *(crypto.decrypt(e) for e, _ in superseded_secrets(subscription, now))]


def request_build(*, delivery: Delivery, now: datetime) -> tuple[dict, bytes]:
    """Headers and body of one attempt: Standard Webhooks headers, basic auth if configured."""
    subscription = delivery.subscription
    body = json.dumps(payload_build(delivery=delivery, now=now), separators=(",", ":")).encode()
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "artifactcourier-webhooks/1",
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": crypto.signature_header(
            secrets_=_signing_secrets(subscription, now),
            msg_id=delivery.webhook_id,
            timestamp=timestamp,
            body=body,
        ),
    }
    if subscription.basic_auth_username:
        headers["Authorization"] = transport.basic_auth_header(
            subscription.basic_auth_username,
            crypto.decrypt(subscription.basic_auth_password_encrypted),
        )
    return headers, body


def _sigv4(subscription: Subscription) -> transport.SigV4 | None:
    if not subscription.uses_sigv4:
        return None
    return transport.SigV4(
        subscription.sigv4_access_key_id,
        crypto.decrypt(subscription.sigv4_secret_encrypted),
        subscription.sigv4_region,
        subscription.sigv4_service,
    )


def _excerpt(body: bytes) -> str:
    """The start of a response for the delivery log. A receiver echoing the payload back would
    otherwise put the status token and signed links in the admin: they are redacted."""
    text = body.decode("utf-8", "replace")[: settings.WEBHOOK_RESPONSE_EXCERPT_CHARS]
    return redact(text.replace("\x00", "\ufffd"))


def retry_delay(*, attempt: int, retry_after: float | None) -> float | None:
    """Seconds until attempt ``attempt + 1`` after ``attempt`` failed, or None: give up.

    The schedule (WEBHOOK_RETRY_SCHEDULE, Svix's by default) with +-20 % jitter, so receivers
    recovering from an outage are not hit by every sender at once; a longer Retry-After wins."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if attempt >= len(schedule):
        return None
    delay = schedule[attempt] * random.uniform(0.8, 1.2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.WEBHOOK_RETRY_AFTER_MAX_SECONDS))
    return delay


def delivery_attempt(*, delivery_id: int, resolve=None) -> DeliveryAttempt | None:
    """One attempt of one delivery, if it is due and nobody else is attempting it."""
    token = _lease_take(delivery_id)
    if token is None:
        return None
    delivery = Delivery.objects.select_related(
        "subscription__project", "build", "read_key", "status_key"
    ).get(pk=delivery_id)
    subscription = delivery.subscription
    now = timezone.now()
    started = time.monotonic()
    try:
        headers, body = request_build(delivery=delivery, now=now)
        url = transport.url_parse(subscription.url)
    except Exception as error:
        logger.warning("webhook delivery %s could not be built: %s", delivery_id, error)
        outcome = transport.Outcome(None, b"", None, f"not sent: {error}"[:500], 0)
    else:
        outcome = transport.post(
            url=url, headers=headers, body=body, sigv4=_sigv4(subscription), resolve=resolve
        )
    return _outcome_record(
        delivery=delivery,
        token=token,
        started_at=now,
        duration_ms=int((time.monotonic() - started) * 1000),
        outcome=outcome,
    )


@transaction.atomic
def _outcome_record(
    *,
    delivery: Delivery,
    token: str,
    started_at: datetime,
    duration_ms: int,
    outcome: transport.Outcome,
) -> DeliveryAttempt | None:
    subscription = delivery.subscription
    held = Delivery.objects.select_for_update().filter(
        pk=delivery.pk, lease_token=token, state=Delivery.State.PENDING
    )
    current = held.first()
    if current is None and not Delivery.objects.filter(pk=delivery.pk).exists():
        return None  # the subscription was deleted while this attempt was on the wire
    attempt = DeliveryAttempt.objects.create(
        delivery=delivery,
        number=(current.attempt_count if current else delivery.attempt_count) + 1,
        started_at=started_at,
        duration_ms=duration_ms,
        status_code=outcome.status_code,
        response_excerpt=_excerpt(outcome.body),
        error=outcome.error
        or ("" if outcome.ok or outcome.status_code is None else f"HTTP {outcome.status_code}"),
        succeeded=outcome.ok,
    )
    if current is None:
        # Our lease lapsed and another attempt took over: it decides the delivery's state.
        return attempt
    now = timezone.now()
    fields = {
        "attempt_count": F("attempt_count") + 1,
        "schedule_index": F("schedule_index") + 1,
        "lease_token": "",
        "lease_until": None,
        "enqueued_at": None,
        "last_error": attempt.error,
    }
    if outcome.ok:
        held.update(**fields, state=Delivery.State.DELIVERED, delivered_at=now)
        if subscription.consecutive_failures:
            Subscription.objects.filter(pk=subscription.pk).update(consecutive_failures=0)
        return attempt
    if outcome.status_code == 410:
        # 410 Gone: the receiver says this endpoint is gone for good.
        held.update(**fields, state=Delivery.State.FAILED)
        subscription_disable(subscription=subscription, reason="the endpoint answered 410 Gone")
        return attempt
    delay = retry_delay(attempt=current.schedule_index + 1, retry_after=outcome.retry_after)
    if delay is None:
        held.update(**fields, state=Delivery.State.FAILED)
        failures = Subscription.objects.filter(pk=subscription.pk)
        failures.update(consecutive_failures=F("consecutive_failures") + 1)
        count = failures.values_list("consecutive_failures", flat=True).first() or 0
        limit = settings.WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES
        if count >= limit:
            subscription_disable(
                subscription=subscription,
                reason=f"{count} deliveries in a row failed after all retries "
                f"(last: {attempt.error or 'no answer'})",
            )
        return attempt
    held.update(**fields, next_attempt_at=now + timedelta(seconds=delay))
    if delay <= settings.WEBHOOK_COUNTDOWN_MAX_SECONDS:
        transaction.on_commit(lambda: deliveries_enqueue(ids=[delivery.pk], countdown=delay))
    return attempt
