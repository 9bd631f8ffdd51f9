"""Deriving narrower keys from a key."""

from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from ..access import path_prefix_validate
from ..errors import InvalidCredential, KeyForbidden
from ..models import ApiKey, AuditEvent
from ..scopes import Scope, parse_scopes
from .denials import audit_refusal
from .minting import _create, audit


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
        # Rate-limited like every refusal of a live key: a minting loop adds bounded rows.
        audit_refusal(
            key=parent,
            action=AuditEvent.Action.DENIED,
            reason=f"derive refused: {refused.get_codes()}",
            ip=ip,
            detail={"detail": str(refused.detail)},
        )
        raise
