"""Minting, authenticating, revoking and auditing keys. Views, admin and commands call these."""

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from . import crypto
from .access import path_prefix_validate, ref_pattern_validate
from .errors import InvalidCredential, KeyConflict, KeyForbidden
from .models import ApiKey, AuditEvent
from .scopes import BUILD_KEY_SCOPES, DEPLOY_KEY_SCOPES, WRITE_SCOPES, Scope, parse_scopes

logger = logging.getLogger(__name__)


def _digest(token: str) -> str:
    return crypto.token_digest(token, pepper=settings.TOKEN_PEPPER)


def audit(
    *,
    action: AuditEvent.Action,
    key: ApiKey | None = None,
    actor: str = "system",
    reason: str = "",
    ip: str | None = None,
    detail: dict | None = None,
    project=None,
    build=None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        action=action,
        key=key,
        project_id=project.pk if project is not None else getattr(key, "project_id", None),
        build_id=build.pk if build is not None else getattr(key, "build_id", None),
        actor=actor,
        reason=reason,
        ip=ip,
        detail=detail or {},
    )


def _create(
    *,
    kind: ApiKey.Kind,
    project,
    scopes,
    build=None,
    parent: ApiKey | None = None,
    name: str = "",
    expires_at=None,
    path_prefix: str = "",
    ref_pattern: str = "",
    created_by=None,
    seed: str = "",
    replaces: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    if seed:
        token = crypto.token_derive(kind, secret=settings.TOKEN_PEPPER, seed=seed)
    else:
        token = crypto.token_generate(kind)
    key = ApiKey.objects.create(
        kind=kind,
        project=project,
        build=build,
        parent=parent,
        lineage=parent.subtree_lineage if parent else "/",
        scopes=sorted(str(s) for s in scopes),
        name=name,
        expires_at=expires_at,
        path_prefix=path_prefix,
        ref_pattern=ref_pattern,
        digest=_digest(token),
        seed=seed,
        created_by=created_by,
        replaces=replaces,
    )
    return key, token


@transaction.atomic
def key_mint_project(
    *, project, scopes=(Scope.BUILDS_CREATE,), name: str = "", created_by=None, actor="system"
) -> tuple[ApiKey, str]:
    key, token = _create(
        kind=ApiKey.Kind.PROJECT, project=project, scopes=scopes, name=name, created_by=created_by
    )
    audit(action=AuditEvent.Action.MINT, key=key, actor=actor, detail={"scopes": key.scopes})
    return key, token


@transaction.atomic
def key_mint_for_build(*, build) -> tuple[ApiKey, str]:
    """The build's own key: read-write while it runs, expiring with the project's retention."""
    scopes = set(BUILD_KEY_SCOPES)
    if not build.trusted:
        scopes.discard(Scope.KEYS_MINT)
    key, token = _create(
        kind=ApiKey.Kind.BUILD,
        project=build.project,
        build=build,
        scopes=scopes,
        name=f"build #{build.number}",
        expires_at=build.created_at + timedelta(days=build.project.retention_days),
    )
    audit(action=AuditEvent.Action.MINT, key=key, detail={"scopes": key.scopes})
    return key, token


def _deploy_tokens(project):
    return ApiKey.objects.filter(project=project, kind=ApiKey.Kind.DEPLOY, parent__isnull=True)


def _deploy_token_head(project) -> ApiKey | None:
    """The newest deploy token not replaced by rotation, alive or not: the next one replaces it.

    Each token is replaced at most once (``replaces`` is one-to-one), so rotation extends this
    chain and never branches it, even when the head was revoked to force a fresh token.
    """
    return (
        _deploy_tokens(project)
        .filter(replaced_by__isnull=True)
        .select_related("replaces")
        .order_by("-created_at", "-id")
        .first()
    )


def deploy_token_current(*, project) -> tuple[ApiKey, str] | None:
    """The project's current deploy token (minted on first use), or None if not opted in.

    Deploy tokens are re-derivable from a random per-key seed and the server's pepper, so every
    build's runner can be handed the current one without the token ever being stored. A token
    already replaced by rotation is never handed out (it dies at the end of its grace period);
    when the newest one was revoked or expired, a fresh one replaces it, with its restriction.
    """
    if not project.deploy_tokens_enabled:
        return None
    key = (
        _deploy_tokens(project)
        .active()
        .filter(replaced_by__isnull=True)
        .order_by("-created_at", "-id")
        .first()
    )
    if key is not None:
        return key, _deploy_token(key)
    with transaction.atomic():
        # Serialised like rotation, so two builds starting at once do not both replace the head.
        project = type(project).objects.select_for_update().get(pk=project.pk)
        head = _deploy_token_head(project)
        if head is not None and head.is_alive():
            return head, _deploy_token(head)
        return deploy_token_mint(
            project=project, ref_pattern=head.ref_pattern if head else "", replaces=head
        )


def deploy_token_max_seconds() -> int:
    return settings.DEPLOY_TOKEN_MAX_DAYS * 86400


def _deploy_token_lifetime(expires_in: int | None) -> int:
    """Seconds a new deploy token lives: the maximum unless asked for less; never more."""
    limit = deploy_token_max_seconds()
    if expires_in is None:
        return limit
    if not 0 < expires_in <= limit:
        raise ValidationError(
            {"expires_in": f"Ensure this value is between 1 and {limit} seconds."},
            code="max_value" if expires_in > limit else "min_value",
        )
    return expires_in


def _ref_pattern_clean(ref_pattern: str | None) -> str | None:
    """None (keep the current restriction), "" (none) or a valid ref glob; else 400."""
    if not ref_pattern:
        return ref_pattern
    try:
        return ref_pattern_validate(ref_pattern)
    except ValueError as error:
        raise ValidationError({"ref_pattern": str(error)}) from None


@transaction.atomic
def deploy_token_mint(
    *,
    project,
    expires_in: int | None = None,
    ref_pattern: str = "",
    replaces: ApiKey | None = None,
    created_by=None,
    actor: str = "system",
) -> tuple[ApiKey, str]:
    """A deploy token always expires: ``expires_in`` seconds (default and cap: the maximum)."""
    expires_in = _deploy_token_lifetime(expires_in)
    key, token = _create(
        kind=ApiKey.Kind.DEPLOY,
        project=project,
        scopes=DEPLOY_KEY_SCOPES,
        name="deploy token",
        expires_at=timezone.now() + timedelta(seconds=expires_in),
        ref_pattern=ref_pattern,
        created_by=created_by,
        seed=secrets.token_hex(32),
        replaces=replaces,
    )
    audit(
        action=AuditEvent.Action.MINT,
        key=key,
        actor=actor,
        detail={"scopes": key.scopes, "ref_pattern": ref_pattern},
    )
    return key, token


def _deploy_token(key: ApiKey) -> str:
    return crypto.token_derive(key.kind, secret=settings.TOKEN_PEPPER, seed=key.seed)


@dataclass(frozen=True)
class RotatedDeployToken:
    key: ApiKey
    token: str
    previous: ApiKey | None
    # False when this answered a retry within the grace period (same token as before).
    created: bool


def _grace_period_shown(key: ApiKey | None) -> ApiKey | None:
    """The replaced token as the caller should see it: only if it still works for a while."""
    return key if key is not None and not key.is_revoked() else None


def _rotation_retry_check(
    *, key: ApiKey, rotation: AuditEvent, expires_in: int | None, ref_pattern: str | None
) -> None:
    """A rotation inside the grace period of the previous one is a retry only if it repeats (or
    omits) that rotation's parameters; anything else is a conflict, never the earlier token."""
    granted = {"ref_pattern": key.ref_pattern, "expires_in": rotation.detail.get("expires_in")}
    asked = {"ref_pattern": ref_pattern, "expires_in": expires_in}
    differing = [
        f"{name} {asked[name]!r} (it has {granted[name]!r})"
        for name in granted
        if asked[name] is not None and asked[name] != granted[name]
    ]
    if differing:
        raise KeyConflict(
            f"The deploy token was already rotated at {key.created_at.isoformat()} (key "
            f"{key.pk}) and this request asks for other parameters: {', '.join(differing)}. A "
            "retry must repeat or omit them. To replace the new token with different ones, "
            f"revoke key {key.pk} (the admin's revoke action, or DELETE /api/v1/keys/{key.pk} "
            "with that token) and rotate again.",
            code="rotation_parameters_differ",
        )


def deploy_token_rotate(
    *,
    project,
    actor: str,
    created_by=None,
    expires_in: int | None = None,
    ref_pattern: str | None = None,
) -> RotatedDeployToken:
    """Replace the project's deploy token; the old one keeps working for the grace period.

    Retrying within the grace period answers the token the first attempt minted (it is
    re-derivable from its seed), so a lost response never strands a client with two dead
    tokens and a third live one. A request inside that window asking for other parameters is
    refused (409), not answered with a token it did not ask for. To force a fresh token inside
    the window, revoke the new one first: the next rotation replaces the revoked token (and
    keeps its restriction unless told otherwise). ``ref_pattern`` None keeps the current
    token's restriction; "" lifts it.
    """
    ref_pattern = _ref_pattern_clean(ref_pattern)
    if expires_in is not None:
        _deploy_token_lifetime(expires_in)  # refuse bad input before looking for a retry
    with transaction.atomic():
        # The project row serialises concurrent rotations (a second one sees the first's token).
        project = type(project).objects.select_for_update().get(pk=project.pk)
        if not project.deploy_tokens_enabled:
            raise KeyConflict(
                f"Deploy tokens are not enabled for project {project.slug}.",
                code="deploy_tokens_disabled",
            )
        now = timezone.now()
        grace = timedelta(seconds=settings.DEPLOY_TOKEN_ROTATION_GRACE_SECONDS)
        head = _deploy_token_head(project)
        rotation = (
            AuditEvent.objects.filter(action=AuditEvent.Action.ROTATE, key=head).first()
            if head is not None and head.is_alive(now) and now < head.created_at + grace
            else None
        )
        if rotation is not None:
            _rotation_retry_check(
                key=head, rotation=rotation, expires_in=expires_in, ref_pattern=ref_pattern
            )
            previous = _grace_period_shown(head.replaces)
            return RotatedDeployToken(head, _deploy_token(head), previous, False)
        if ref_pattern is None:
            ref_pattern = head.ref_pattern if head else ""
        lifetime = deploy_token_max_seconds() if expires_in is None else expires_in
        key, token = deploy_token_mint(
            project=project,
            expires_in=lifetime,
            ref_pattern=ref_pattern,
            replaces=head,
            created_by=created_by,
            actor=actor,
        )
        grace_end = now + grace
        retiring = list(_deploy_tokens(project).active().exclude(pk=key.pk))
        for old in retiring:
            # The old token and everything derived from it die together at the end of grace.
            ApiKey.objects.subtree_of(old).filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=grace_end)
            ).update(expires_at=grace_end)
        audit(
            action=AuditEvent.Action.ROTATE,
            key=key,
            actor=actor,
            detail={
                "previous": [old.pk for old in retiring],
                "grace_ends_at": grace_end.isoformat(),
                "expires_in": lifetime,
            },
        )
        previous = ApiKey.objects.get(pk=head.pk) if head else None
        return RotatedDeployToken(key, token, _grace_period_shown(previous), True)


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


def key_authenticate(*, token: str, ip: str | None = None) -> ApiKey:
    """Resolve a presented token to a live key, or raise InvalidCredential (401).

    Shape and checksum are checked first, so garbage costs no query. A live key is found with
    one indexed query (digest), plus one for derived keys: every ancestor must still be alive,
    which makes revocation of a parent effective on the very next request.
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
    if key.parent_id is not None and ApiKey.objects.any_dead(key.ancestor_ids):
        _audit_dead_key_use(key=key, reason="parent revoked or expired", ip=ip)
        raise InvalidCredential(
            "This API token was derived from a key that is revoked or expired.", code="revoked"
        )
    key.touch(ip=ip)
    return key


@transaction.atomic
def key_revoke(*, key: ApiKey, reason: str, actor: str) -> int:
    """Revoke a key and every key derived from it. Returns how many keys were revoked.

    Revoking an already revoked key is a no-op (0, no audit event), so retries are harmless.
    """
    # Serialises with key_derive, which locks the whole ancestor chain: a child is either
    # committed before this update (and revoked by it) or refused.
    list(ApiKey.objects.select_for_update().filter(pk=key.pk).values_list("pk"))
    now = timezone.now()
    count = (
        ApiKey.objects.subtree_of(key)
        .filter(revoked_at__isnull=True)
        .update(revoked_at=now, revoked_reason=reason[:200])
    )
    key.refresh_from_db()
    if not count:
        return 0
    audit(
        action=AuditEvent.Action.REVOKE,
        key=key,
        actor=actor,
        reason=reason,
        detail={"revoked_keys": count},
    )
    return count


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


def _derive_locked(
    *,
    parent: ApiKey,
    scopes: Iterable[str] | None,
    expires_in: int | None,
    name: str,
    path_prefix: str | None,
) -> tuple[ApiKey, str]:
    # Lock the whole chain, root first (ids grow with depth, so every locker uses one order):
    # a concurrent revocation of any ancestor either commits first (and we refuse) or waits.
    chain = list(
        ApiKey.objects.select_for_update()
        .filter(pk__in=[*parent.ancestor_ids, parent.pk])
        .order_by("pk")
    )
    now = timezone.now()
    if len(chain) != parent.depth + 1 or not all(k.is_alive(now) for k in chain):
        raise InvalidCredential("This API token has been revoked or has expired.", code="revoked")
    parent = ApiKey.objects.select_related("build", "project").get(pk=parent.pk)
    held = parent.effective_scopes
    if Scope.KEYS_MINT not in held:
        raise KeyForbidden(
            "This key cannot mint keys (keys:mint is not among its effective scopes).",
            code="missing_scope",
        )
    try:
        granted = held - {Scope.KEYS_MINT} if scopes is None else parse_scopes(scopes)
    except ValueError as error:
        raise ValidationError({"scopes": str(error)}) from None
    try:
        path_prefix = path_prefix_validate(path_prefix) if path_prefix else path_prefix
    except ValueError as error:
        raise ValidationError({"path_prefix": str(error)}) from None
    if not granted:
        raise ValidationError({"scopes": "A key needs at least one scope."})
    beyond = granted - held
    if beyond:
        names = ", ".join(sorted(str(s) for s in beyond))
        raise KeyForbidden(
            f"A derived key cannot hold scope(s) {names}: this key does not hold them "
            f"(effective now: {', '.join(sorted(str(s) for s in held))}).",
            code="scope_escalation",
        )
    if parent.depth + 1 > settings.KEY_DERIVE_MAX_DEPTH:
        raise KeyForbidden(
            f"Keys may be derived at most {settings.KEY_DERIVE_MAX_DEPTH} levels deep.",
            code="derivation_too_deep",
        )
    max_seconds = settings.KEY_DERIVED_MAX_SECONDS
    if expires_in is not None and expires_in > max_seconds:
        raise KeyForbidden(
            f"expires_in may be at most {max_seconds} seconds for a derived key.",
            code="expiry_too_long",
        )
    expires_at = now + timedelta(seconds=max_seconds if expires_in is None else expires_in)
    if parent.expires_at is not None and expires_at > parent.expires_at:
        if expires_in is not None:
            raise KeyForbidden(
                "A derived key cannot outlive the key it is derived from, which expires at "
                f"{parent.expires_at.isoformat()}.",
                code="expiry_beyond_parent",
            )
        expires_at = parent.expires_at
    if not path_prefix:
        path_prefix = parent.path_prefix
    elif not path_prefix.startswith(parent.path_prefix):
        raise KeyForbidden(
            f"path_prefix must lie inside this key's own prefix {parent.path_prefix!r}.",
            code="outside_resource",
        )
    child, token = _create(
        kind=ApiKey.Kind.DERIVED,
        project=parent.project,
        build=parent.build,
        parent=parent,
        scopes=granted,
        name=name or f"derived from key {parent.pk}",
        expires_at=expires_at,
        path_prefix=path_prefix,
        ref_pattern=parent.ref_pattern,
        created_by=parent.created_by,
    )
    return child, token


def key_derive(
    *,
    parent: ApiKey,
    scopes: Iterable[str] | None = None,
    expires_in: int | None = None,
    name: str = "",
    path_prefix: str | None = None,
    ip: str | None = None,
) -> tuple[ApiKey, str]:
    """Mint a key from ``parent``: the same resource or narrower, a subset of its *effective*
    scopes, expiring no later than it does. ``keys:mint`` is passed on only when asked for
    (``scopes`` None means: all of the parent's effective scopes but ``keys:mint``).

    Refusals are 403 (``KeyForbidden``) and audited; nothing is created unless all rules hold.
    """
    try:
        with transaction.atomic():
            child, token = _derive_locked(
                parent=parent,
                scopes=scopes,
                expires_in=expires_in,
                name=name,
                path_prefix=path_prefix,
            )
            audit(
                action=AuditEvent.Action.DERIVE,
                key=child,
                actor=f"key:{parent.pk}",
                ip=ip,
                detail={
                    "parent": parent.pk,
                    "scopes": child.scopes,
                    "path_prefix": child.path_prefix,
                    "expires_at": child.expires_at.isoformat(),
                },
            )
            return child, token
    except KeyForbidden as refused:
        audit(
            action=AuditEvent.Action.DENIED,
            key=parent,
            actor=f"key:{parent.pk}",
            reason=f"derive refused: {refused.get_codes()}",
            ip=ip,
            detail={"detail": str(refused.detail)},
        )
        raise


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
