"""Keys behind shared links: minting one for a share, and deciding whether one still holds.

A share is signed under a fresh key derived from the sharer's, so one share can be withdrawn
on its own (revoke that key) and a revoked sharer takes its shares with it (cascade). The
service mints it on the sharer's behalf even when the sharer lacks ``keys:mint`` (untrusted
builds, deploy tokens): the share key is strictly narrower than the sharer (``artifacts:read``
only, one build, inside the sharer's path prefix, never outliving it), so nothing is gained.
"""

from datetime import timedelta
from functools import cache

from django.conf import settings
from django.db import connections
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from ..access import path_prefix_validate, visible_build
from ..errors import InvalidCredential, KeyForbidden
from ..models import ApiKey, AuditEvent, _DigestLookup
from ..scopes import Scope
from .denials import audit_refusal
from .minting import _create


def _refuse(*, key: ApiKey, code: str, message: str, ip: str | None, detail: dict) -> KeyForbidden:
    """Audit a refused share (rate-limited like every refusal of a live key) and return the 403
    to raise."""
    audit_refusal(
        action=AuditEvent.Action.DENIED,
        key=key,
        reason=f"share refused: {code}",
        ip=ip,
        detail=detail,
    )
    return KeyForbidden(message, code=code)


def share_allowed(
    *, sharer: ApiKey, build, prefix: str, paths: list[str], ip: str | None = None
) -> str:
    """Decide whether ``sharer`` may share ``paths`` (or everything under ``prefix``) of
    ``build``; return the share's prefix as a directory inside the sharer's own. Refusals are
    403s, audited here: call this outside any transaction that a refusal would roll back.

    A prefix above the sharer's own (``""``, or ``dist/`` for a key limited to ``dist/app/``)
    narrows to the sharer's: sharing "everything" means everything the sharer sees.
    """
    detail = {"build": build.pk}
    if Scope.ARTIFACTS_READ not in sharer.effective_scopes:
        raise _refuse(
            key=sharer,
            code="missing_scope",
            message="Sharing needs artifacts:read among the key's effective scopes.",
            ip=ip,
            detail=detail,
        )
    if not visible_build(type(build).objects.all(), sharer, build.pk).exists():
        # Views look the build up through the key (404); this guards every other caller.
        raise _refuse(
            key=sharer,
            code="outside_resource",
            message="This key cannot share that build.",
            ip=ip,
            detail=detail,
        )
    if sharer.depth + 1 > settings.KEY_DERIVE_MAX_DEPTH:
        raise _refuse(
            key=sharer,
            code="derivation_too_deep",
            message=f"Keys may be derived at most {settings.KEY_DERIVE_MAX_DEPTH} levels deep.",
            ip=ip,
            detail=detail,
        )
    own = sharer.path_prefix
    if prefix:
        try:
            prefix = path_prefix_validate(prefix)
        except ValueError as error:
            raise ValidationError({"prefix": str(error)}) from None
    if own and not prefix.startswith(own):
        if not own.startswith(prefix):
            raise _refuse(
                key=sharer,
                code="outside_prefix",
                message=f"This key may share only paths under {own!r}, not {prefix!r}.",
                ip=ip,
                detail={**detail, "prefix": prefix, "path_prefix": own},
            )
        prefix = own
    outside = sorted(p for p in paths if not p.startswith(own))
    if outside:
        raise _refuse(
            key=sharer,
            code="outside_prefix",
            message=f"This key may share only paths under {own!r}; outside it: "
            + ", ".join(outside[:10])
            + (" ..." if len(outside) > 10 else ""),
            ip=ip,
            detail={**detail, "paths": outside[:50], "path_prefix": own},
        )
    return prefix


def key_mint_share(*, sharer: ApiKey, build, path_prefix: str, expires_in: int) -> ApiKey:
    """Mint the read-only key a share is signed under (no token: links carry its id and the
    server signs them). Call share_allowed first; run inside the caller's transaction."""
    chain = list(
        ApiKey.objects.select_for_update()
        .filter(pk__in=[*sharer.ancestor_ids, sharer.pk])
        .order_by("pk")
    )
    now = timezone.now()
    if len(chain) != sharer.depth + 1 or not all(k.is_alive(now) for k in chain):
        raise InvalidCredential("This API token has been revoked or has expired.", code="revoked")
    expires_at = now + timedelta(seconds=expires_in)
    if sharer.expires_at is not None and expires_at > sharer.expires_at:
        expires_at = sharer.expires_at
    key, _token = _create(
        kind=ApiKey.Kind.DERIVED,
        project=build.project,
        build=build,
        parent=sharer,
        scopes={Scope.ARTIFACTS_READ},
        name=f"share of build #{build.number}",
        expires_at=expires_at,
        path_prefix=path_prefix or sharer.path_prefix,
        ref_pattern=sharer.ref_pattern,
        created_by=sharer.created_by,
    )
    return key


class LinkKeyDead(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _DeployAncestorLookup:
    """Is a deploy token among these ancestor ids? One prepared statement per chain length."""

    @classmethod
    @cache
    def for_connection(cls, alias: str, vendor: str, count: int) -> "_DeployAncestorLookup":
        return cls(connections[alias], count)

    def __init__(self, connection, count: int) -> None:
        q = connection.ops.quote_name
        meta = ApiKey._meta
        self.sql = (
            f"SELECT 1 FROM {q(meta.db_table)} WHERE {q(meta.pk.column)} IN "  # noqa: S608
            f"({', '.join(['%s'] * count)}) AND {q(meta.get_field('kind').column)} = %s LIMIT 1"
        )

    def any(self, connection, ids: list[int]) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [*ids, ApiKey.Kind.DEPLOY.value])
            return cursor.fetchone() is not None


def link_key_check(*, kid: int) -> ApiKey:
    """The key a signed link names, if it may still read: alive, every ancestor alive, holding
    ``artifacts:read`` now (a deploy token's shares stop when the project opts out). Raises
    LinkKeyDead with the reason otherwise. Two prepared queries at most."""
    connection = connections[ApiKey.objects.db]
    # The authentication lookup's statement, found by id: a signed link names its key.
    lookup = _DigestLookup.for_connection(connection.alias, connection.vendor, "id")
    key = lookup.fetch(connection, kid)
    if key is None:
        raise LinkKeyDead("key_unknown", "The key this link was signed under no longer exists.")
    if key.is_revoked():
        raise LinkKeyDead("key_revoked", "This link was withdrawn: its key has been revoked.")
    if key.is_expired():
        raise LinkKeyDead("key_expired", "This link's key has expired.")
    if key.parent_id is not None and key.dead_ancestors:
        raise LinkKeyDead(
            "ancestor_revoked",
            "This link was withdrawn: the key it was shared from is revoked or expired.",
        )
    if key.parent_id is not None and not key.project.deploy_tokens_enabled:
        _deploy_ancestor_check(key)
    if Scope.ARTIFACTS_READ not in key.effective_scopes:
        raise LinkKeyDead("missing_scope", "This link's key may no longer read artifacts.")
    return key


def _deploy_ancestor_check(key: ApiKey) -> None:
    """While a project has switched deploy tokens off, links shared by one (or by a key
    derived from one) stop too."""
    connection = connections[ApiKey.objects.db]
    ids = key.ancestor_ids
    lookup = _DeployAncestorLookup.for_connection(connection.alias, connection.vendor, len(ids))
    if lookup.any(connection, ids):
        raise LinkKeyDead(
            "deploy_tokens_disabled",
            "This link was shared by a deploy token, and the project has switched those off.",
        )
