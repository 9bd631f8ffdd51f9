"""Refusals: the 403 a key gets, its audit row, and the tripwire."""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..access import path_allowed
from ..errors import KeyForbidden
from ..models import ApiKey, AuditEvent
from ..scopes import WRITE_SCOPES, Scope
from .deploy import deploy_token_rotate_away
from .minting import audit
from .revocation import key_revoke

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Denial:
    """Why a key was refused: the answer it gets, and which missing scopes say nothing about a
    stolen key (they are audited as plain denials and do not count toward the tripwire).
    ``write`` marks a refusal that is a write attempt whatever the scopes (it counts)."""

    code: str
    message: str
    excused: frozenset = frozenset()
    excuse: str = ""
    write: bool = False
    reason: str = "missing scope"


def _denial(key: ApiKey, missing: frozenset[str], now: datetime) -> _Denial:
    """Classify a refusal once, for both the client's answer and the tripwire.

    A job still running when its build was canceled keeps uploading with the key it was given
    (granted scopes lost to the finish, moments ago); an untrusted build's key was never granted
    keys:mint, and asking is how a fork's job looks, not an attack on the key.
    """
    build = key.build
    if key.is_switched_off:
        return _Denial(
            "deploy_tokens_disabled",
            f"Deploy tokens are switched off for project {key.project.slug}: this token holds no "
            "scope until the project opts in again.",
        )
    if build is not None and not build.trusted and str(Scope.KEYS_MINT) in missing:
        return _Denial(
            "untrusted_build",
            "Keys of untrusted builds (forks, pull requests) cannot mint keys.",
            frozenset({str(Scope.KEYS_MINT)}),
            "untrusted build cannot mint",
        )
    message = f"This key does not have the scope(s) {', '.join(sorted(missing))} (effective now)."
    grace = timedelta(seconds=settings.TRIPWIRE_FINISH_GRACE_SECONDS)
    if (
        build is not None
        and not build.is_running
        and build.finished_at is not None
        and now - build.finished_at < grace
    ):
        return _Denial(
            "missing_scope",
            message,
            missing & set(key.scopes),
            "write after its build finished (within grace)",
        )
    return _Denial("missing_scope", message)


def audit_refusal(
    *, key: ApiKey, action: AuditEvent.Action, reason: str, ip: str | None, detail: dict
) -> int:
    """Audit one refusal of a live key, at most AUDIT_REFUSALS_PER_WINDOW rows per key and
    action per TRIPWIRE_WINDOW_SECONDS; past that the newest row counts the repeats instead
    (one UPDATE, constant size), so a refusal storm cannot grow the audit table without bound.

    Returns the number of rows of this action for this key in the window, which is what the
    tripwire counts: the cap is never below TRIPWIRE_WRITE_DENIALS, so it reaches its
    threshold exactly as if every refusal had its own row.
    """
    window_start = timezone.now() - timedelta(seconds=settings.TRIPWIRE_WINDOW_SECONDS)
    recent = AuditEvent.objects.filter(key=key, action=action, created_at__gte=window_start)
    rows = recent.count()
    if rows < max(settings.AUDIT_REFUSALS_PER_WINDOW, settings.TRIPWIRE_WRITE_DENIALS):
        audit(action=action, key=key, actor=f"key:{key.pk}", reason=reason, ip=ip, detail=detail)
        return rows + 1
    newest = recent.order_by("-created_at", "-id").only("pk", "detail").first()
    if newest is not None:
        # Read-modify-write: concurrent repeats may undercount, never add a row.
        repeats = newest.detail.get("repeats", 0) if isinstance(newest.detail, dict) else 0
        AuditEvent.objects.filter(pk=newest.pk).update(
            detail={
                **(newest.detail if isinstance(newest.detail, dict) else {}),
                "repeats": repeats + 1,
                "last_repeat_at": timezone.now().isoformat(),
            }
        )
    return rows


def key_denied(
    *,
    key: ApiKey,
    missing: Iterable[str] = (),
    ip: str | None,
    path: str,
    denial: _Denial | None = None,
) -> KeyForbidden:
    """Audit a refused request and return the 403 to answer; repeated write attempts by one
    key trip the tripwire.

    A read-only key (finished build, deploy token) retrying writes is how a stolen token being
    replayed until a write window opens looks from here.
    """
    now = timezone.now()
    missing = frozenset(str(s) for s in missing)
    denial = denial or _denial(key, missing, now)
    refusal = KeyForbidden(denial.message, code=denial.code)
    is_write = denial.write or bool((missing - denial.excused) & WRITE_SCOPES)
    action = AuditEvent.Action.WRITE_DENIED if is_write else AuditEvent.Action.DENIED
    detail = {"path": path}
    if missing:
        detail["missing"] = sorted(missing)
    denials = audit_refusal(
        key=key,
        action=action,
        reason=denial.excuse if denial.excused and not is_write else denial.reason,
        ip=ip,
        detail=detail,
    )
    if is_write and denials >= settings.TRIPWIRE_WRITE_DENIALS and not key.is_revoked():
        _trip(key=key, denials=denials, ip=ip)
    return refusal


def _trip(*, key: ApiKey, denials: int, ip: str | None) -> None:
    """Take the key out of an attacker's hands.

    A key of one job is revoked (with everything derived from it). A shared key (the project's
    deploy token, handed to every trusted build and every CD consumer) is rotated instead: the
    old token keeps working for the normal grace period, so consumers pick up the new one on
    their next build instead of all failing at once, and the trip is recorded as a suspected
    leak. Only the call that acted audits (a concurrent denial may have tripped it first).
    """
    window = settings.TRIPWIRE_WINDOW_SECONDS
    if not key.is_shared:
        if key_revoke(key=key, reason="tripwire", actor="system"):
            audit(
                action=AuditEvent.Action.TRIPWIRE,
                key=key,
                reason=f"{denials} denied write attempts within {window}s",
                ip=ip,
            )
        return
    with transaction.atomic():
        # The project row first, as rotation takes it: one trip per shared key, recorded once.
        type(key.project).objects.select_for_update().filter(pk=key.project_id).first()
        if AuditEvent.objects.filter(key=key, action=AuditEvent.Action.TRIPWIRE).exists():
            return
        deploy_token_rotate_away(key=key, reason="tripwire: suspected leak")
        key.refresh_from_db(fields=["expires_at", "revoked_at"])
        # Already replaced by an earlier rotation: it is retiring anyway, nothing to rotate.
        rotated_to = ApiKey.objects.filter(replaces=key).values_list("pk", flat=True).first()
        audit(
            action=AuditEvent.Action.TRIPWIRE,
            key=key,
            reason=f"suspected leak: {denials} denied write attempts within {window}s",
            ip=ip,
            detail={
                "suspected_leak": True,
                "rotated_to": rotated_to,
                "works_until": key_expiry(key),
            },
        )
    logger.warning(
        "Deploy token %s of project %s made %s denied write attempts within %ss: suspected "
        "leak. Rotated (current token: key %s); this one works until %s.",
        key.pk,
        key.project.slug,
        denials,
        window,
        rotated_to,
        key_expiry(key),
    )


def key_expiry(key: ApiKey | None) -> str | None:
    return key.expires_at.isoformat() if key is not None and key.expires_at else None


def key_path_check(*, key: ApiKey, artifact_path: str, ip: str | None, path: str) -> None:
    """Refuse (403 ``path_not_allowed``, audited, a write attempt for the tripwire) a write at
    ``artifact_path`` outside the key's path prefix. ``path`` is the request's path."""
    if path_allowed(key, artifact_path):
        return
    raise key_denied(
        key=key,
        ip=ip,
        path=path,
        denial=_Denial(
            "path_not_allowed",
            f"This key may not write outside its path prefix {key.path_prefix!r}.",
            write=True,
            reason="outside path prefix",
        ),
    )


def shared_key_self_revoke_denied(*, key: ApiKey, ip: str | None, path: str) -> KeyForbidden:
    """The 403 for a shared key (deploy token) asking to revoke itself: one consumer must not
    cut off every other. Audited, and a write attempt for the tripwire."""
    return key_denied(
        key=key,
        ip=ip,
        path=path,
        denial=_Denial(
            "shared_key",
            "A deploy token is shared by every build of its project and every CD consumer: it "
            "cannot revoke itself. A key with tokens:manage or a staff user can revoke it, or "
            f"rotate it (POST /api/v1/projects/{key.project.slug}/deploy-tokens/rotate).",
            write=True,
            reason="shared key cannot revoke itself",
        ),
    )
