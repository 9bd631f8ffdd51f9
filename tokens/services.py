"""Minting, authenticating, revoking and auditing keys. Views, admin and commands call these."""

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import crypto
from .errors import InvalidCredential
from .models import ApiKey, AuditEvent
from .scopes import BUILD_KEY_SCOPES, DEPLOY_KEY_SCOPES, WRITE_SCOPES, Scope


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


def deploy_token_current(*, project) -> tuple[ApiKey, str] | None:
    """The project's current deploy token (minted on first use), or None if not opted in.

    Deploy tokens are re-derivable from a random per-key seed and the server's pepper, so every
    build's runner can be handed the current one without the token ever being stored.
    """
    if not project.deploy_tokens_enabled:
        return None
    with transaction.atomic():
        key = (
            ApiKey.objects.active()
            .filter(project=project, kind=ApiKey.Kind.DEPLOY, parent__isnull=True)
            .order_by("-created_at", "-id")
            .first()
        )
        if key is None:
            return deploy_token_mint(project=project)
    return key, crypto.token_derive(key.kind, secret=settings.TOKEN_PEPPER, seed=key.seed)


@transaction.atomic
def deploy_token_mint(*, project, created_by=None, actor="system") -> tuple[ApiKey, str]:
    key, token = _create(
        kind=ApiKey.Kind.DEPLOY,
        project=project,
        scopes=DEPLOY_KEY_SCOPES,
        name="deploy token",
        expires_at=timezone.now() + timedelta(days=settings.DEPLOY_TOKEN_MAX_DAYS),
        created_by=created_by,
        seed=secrets.token_hex(32),
    )
    audit(action=AuditEvent.Action.MINT, key=key, actor=actor, detail={"scopes": key.scopes})
    return key, token


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
        audit(action=AuditEvent.Action.DENIED, key=key, reason="revoked", ip=ip)
        raise InvalidCredential("This API token has been revoked.", code="revoked")
    if key.is_expired():
        audit(action=AuditEvent.Action.DENIED, key=key, reason="expired", ip=ip)
        raise InvalidCredential("This API token has expired.", code="expired")
    if key.parent_id is not None and ApiKey.objects.dead_among(key.ancestor_ids).exists():
        audit(action=AuditEvent.Action.DENIED, key=key, reason="parent revoked or expired", ip=ip)
        raise InvalidCredential(
            "This API token was derived from a key that is revoked or expired.", code="revoked"
        )
    key.touch(ip=ip)
    return key


@transaction.atomic
def key_revoke(*, key: ApiKey, reason: str, actor: str) -> int:
    """Revoke a key and every key derived from it. Returns how many keys were revoked."""
    now = timezone.now()
    count = (
        ApiKey.objects.subtree_of(key)
        .filter(revoked_at__isnull=True)
        .update(revoked_at=now, revoked_reason=reason[:200])
    )
    key.refresh_from_db()
    audit(
        action=AuditEvent.Action.REVOKE,
        key=key,
        actor=actor,
        reason=reason,
        detail={"revoked_keys": count},
    )
    return count


def key_denied(*, key: ApiKey, missing, ip: str | None, path: str) -> None:
    """Audit a refused request; repeated write attempts by one key trip its revocation.

    A read-only key (finished build, deploy token) retrying writes is how a stolen token being
    replayed until a write window opens looks from here.
    """
    missing = sorted(str(s) for s in missing)
    is_write = bool(set(missing) & WRITE_SCOPES)
    action = AuditEvent.Action.WRITE_DENIED if is_write else AuditEvent.Action.DENIED
    audit(
        action=action,
        key=key,
        actor=f"key:{key.pk}",
        reason="missing scope",
        ip=ip,
        detail={"missing": missing, "path": path},
    )
    if not is_write or key.is_revoked():
        return
    window_start = timezone.now() - timedelta(seconds=settings.TRIPWIRE_WINDOW_SECONDS)
    denials = AuditEvent.objects.filter(
        key=key, action=AuditEvent.Action.WRITE_DENIED, created_at__gte=window_start
    ).count()
    if denials >= settings.TRIPWIRE_WRITE_DENIALS:
        key_revoke(key=key, reason="tripwire", actor="system")
        audit(
            action=AuditEvent.Action.TRIPWIRE,
            key=key,
            reason=f"{denials} denied write attempts within {settings.TRIPWIRE_WINDOW_SECONDS}s",
            ip=ip,
        )
