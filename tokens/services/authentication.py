"""Resolving a presented token to a live key."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .. import crypto
from ..errors import InvalidCredential
from ..models import ApiKey, AuditEvent
from .minting import _digest, audit


def _audit_dead_key_use(*, key: ApiKey, reason: str, ip: str | None) -> None:
    """Audit a dead token being presented, at most once per key and reason per
    KEY_LAST_USED_INTERVAL: a stolen revoked token replayed in a loop must not grow the audit
    table without bound (one indexed existence check per request instead of one row)."""
    since = timezone.now() - timedelta(seconds=settings.KEY_LAST_USED_INTERVAL)
    recent = AuditEvent.objects.filter(
        key=key, action=AuditEvent.Action.DENIED, created_at__gte=since, reason=reason
    )
    if not recent.exists():
        audit(action=AuditEvent.Action.DENIED, key=key, reason=reason, ip=ip)


def key_alive(*, key: ApiKey) -> bool:
    """Is ``key`` still alive now, and every key it was derived from? Read from the database
    (one query), not from the possibly stale instance: for re-checking a key that authenticated
    a while ago (a long upload) before committing what it did."""
    return not ApiKey.objects.any_dead([*key.ancestor_ids, key.pk])


def key_authenticate(*, token: str, ip: str | None = None) -> ApiKey:
    """Resolve a presented token to a live key, or raise InvalidCredential (401).

    Shape and checksum are checked first, so garbage costs no query. A live key is found in one
    round trip (digest), which also brings its build, its project and, for a derived key, the
    state of every ancestor: revocation of a parent is effective on the very next request.
    """
    try:
        kind = crypto.token_kind(token)
    except crypto.InvalidToken:
        raise InvalidCredential("Invalid API token.", code="invalid_token") from None
    key = ApiKey.objects.get_by_digest(_digest(token))
    if key is None or key.kind != kind:
        raise InvalidCredential("Invalid API token.", code="invalid_token")
    if key.is_revoked():
        _audit_dead_key_use(key=key, reason="revoked", ip=ip)
        raise InvalidCredential("This API token has been revoked.", code="revoked")
    if key.is_expired():
        _audit_dead_key_use(key=key, reason="expired", ip=ip)
        raise InvalidCredential("This API token has expired.", code="expired")
    if key.parent_id is not None and key.dead_ancestors:
        _audit_dead_key_use(key=key, reason="parent revoked or expired", ip=ip)
        raise InvalidCredential(
            "This API token was derived from a key that is revoked or expired.", code="revoked"
        )
    key.touch(ip=ip)
    return key
