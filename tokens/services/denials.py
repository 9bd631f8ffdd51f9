"""Refusals: the 403 a key gets, its audit row, and the tripwire."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from ..errors import KeyForbidden
from ..models import ApiKey, AuditEvent
from ..scopes import WRITE_SCOPES, Scope
from .minting import audit
from .revocation import key_revoke


@dataclass(frozen=True)
class _Denial:
    """Why a key was refused: the answer it gets, and which missing scopes say nothing about a
    stolen key (they are audited as plain denials and do not count toward the tripwire)."""

    code: str
    message: str
    excused: frozenset = frozenset()
    excuse: str = ""


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


def key_denied(*, key: ApiKey, missing: Iterable[str], ip: str | None, path: str) -> KeyForbidden:
    """Audit a refused request and return the 403 to answer; repeated write attempts by one
    key trip its revocation.

    A read-only key (finished build, deploy token) retrying writes is how a stolen token being
    replayed until a write window opens looks from here.
    """
    now = timezone.now()
    missing = frozenset(str(s) for s in missing)
    denial = _denial(key, missing, now)
    refusal = KeyForbidden(denial.message, code=denial.code)
    is_write = bool((missing - denial.excused) & WRITE_SCOPES)
    action = AuditEvent.Action.WRITE_DENIED if is_write else AuditEvent.Action.DENIED
    audit(
        action=action,
        key=key,
        actor=f"key:{key.pk}",
        reason=denial.excuse if denial.excused and not is_write else "missing scope",
        ip=ip,
        detail={"missing": sorted(missing), "path": path},
    )
    if not is_write or key.is_revoked():
        return refusal
    window_start = now - timedelta(seconds=settings.TRIPWIRE_WINDOW_SECONDS)
    denials = AuditEvent.objects.filter(
        key=key, action=AuditEvent.Action.WRITE_DENIED, created_at__gte=window_start
    ).count()
    if denials < settings.TRIPWIRE_WRITE_DENIALS:
        return refusal
    # A concurrent denial may have tripped it first: only the call that revoked audits.
    if key_revoke(key=key, reason="tripwire", actor="system"):
        audit(
            action=AuditEvent.Action.TRIPWIRE,
            key=key,
            reason=f"{denials} denied write attempts within {settings.TRIPWIRE_WINDOW_SECONDS}s",
            ip=ip,
        )
    return refusal
