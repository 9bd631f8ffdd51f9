"""Minting keys, and the audit trail every key service writes to."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction

from .. import crypto
from ..models import ApiKey, AuditEvent
from ..scopes import BUILD_KEY_SCOPES, Scope


def _digest(token: str) -> str:
    return crypto.token_digest(token, pepper=settings.TOKEN_PEPPER)


def _capped(value, limit: int):
    """``value`` (JSON) with every string cut to ``limit`` characters and every list to 50
    items: what a client sends (a path, a name) is kept recognisable but bounded in size."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… ({len(value)} characters)"
    if isinstance(value, dict):
        return {str(k)[:limit]: _capped(v, limit) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        items = [_capped(v, limit) for v in value[:50]]
        return [*items, f"… ({len(value)} items)"] if len(value) > 50 else items
    return value


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
    """Write one audit row. Free text is cut to its column, detail to AUDIT_DETAIL_MAX_CHARS per
    string: no request can make one row large."""
    limit = settings.AUDIT_DETAIL_MAX_CHARS
    return AuditEvent.objects.create(
        action=action,
        key=key,
        project_id=project.pk if project is not None else getattr(key, "project_id", None),
        build_id=build.pk if build is not None else getattr(key, "build_id", None),
        actor=actor[:200],
        reason=reason[:200],
        ip=ip,
        detail=_capped(detail or {}, limit),
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
