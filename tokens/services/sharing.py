"""Keys behind shared links: minting one for a share, and deciding whether one still holds.

A share is signed under a fresh key derived from the sharer's, so one share can be withdrawn
on its own (revoke that key) and a revoked sharer takes its shares with it (cascade). The
service mints it on the sharer's behalf even when the sharer lacks ``keys:mint`` (untrusted
builds, deploy tokens): the share key is strictly narrower than the sharer (``artifacts:read``
only, one build, inside the sharer's path prefix, never outliving it), so nothing is gained.
"""

from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from django.apps import apps
from django.conf import settings
from django.db import connections
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from ..access import path_allowed, path_prefix_validate, visible_build
from ..errors import InvalidCredential, KeyForbidden
from ..models import (
    ApiKey,
    AuditEvent,
    RowModels,
    _hot_cursor,
    key_ancestor_ids_sql,
    key_attach,
    key_dead_sql,
)
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


class _LinkLookup:
    """Everything a signed-link request needs to decide, in one round trip: the key with this
    id, its build and project, how many of its ancestors are dead (revoked or expired now) and
    how many are deploy tokens, and the artifact (with its blob) at the link's path in the
    link's build, if there is one.

    Composed once per connection from the models' metadata (columns stay in step with the
    models) and run through ``_hot_cursor`` (a prepared statement on PostgreSQL): compiling the
    equivalent ORM queries costs several times running them. The artifact is joined on the
    link's own build id and path, not through the key: whether the key may reach it is decided
    by ``link_check`` after the row is read.
    """

    @classmethod
    @cache
    def for_connection(cls, alias: str, vendor: str) -> "_LinkLookup":
        return cls(connections[alias])

    def __init__(self, connection) -> None:
        q = connection.ops.quote_name
        meta = ApiKey._meta
        Build = meta.get_field("build").related_model
        Project = meta.get_field("project").related_model
        Artifact = apps.get_model("artifacts", "Artifact")
        Blob = Artifact._meta.get_field("blob").related_model
        self.columns = RowModels(
            connection, [(ApiKey, "k"), (Build, "b"), (Project, "p"), (Artifact, "f"), (Blob, "bl")]
        )
        columns = self.columns.sql
        table, pk = q(meta.db_table), q(meta.pk.column)
        parent_id = q(meta.get_field("parent").column)
        kind = q(meta.get_field("kind").column)
        artifact = Artifact._meta
        joins = (
            f"INNER JOIN {q(Project._meta.db_table)} p ON p.{q(Project._meta.pk.column)} = "
            f"k.{q(meta.get_field('project').column)} "
            f"LEFT JOIN {q(Build._meta.db_table)} b ON b.{q(Build._meta.pk.column)} = "
            f"k.{q(meta.get_field('build').column)} "
        )
        artifact_joins = (
            f"LEFT JOIN {q(artifact.db_table)} f ON f.{q(artifact.get_field('build').column)} = %s "
            f"AND f.{q(artifact.get_field('path').column)} = %s "
            f"LEFT JOIN {q(Blob._meta.db_table)} bl ON bl.{q(Blob._meta.pk.column)} = "
            f"f.{q(artifact.get_field('blob').column)} "
            f"WHERE k.{pk} = %s"
        )
        if connection.vendor == "postgresql":
            # As tokens.models._DigestLookup on PostgreSQL: the ancestors are the ids listed in
            # ``lineage``, probed by primary key; a root key skips the probe.
            self.sql = (
                f"SELECT {columns}, chain.dead, chain.deploy "  # noqa: S608
                f"FROM {table} k {joins}"
                f"LEFT JOIN LATERAL (SELECT "
                f"COUNT(*) FILTER (WHERE {key_dead_sql(q, 'a')}) AS dead, "
                f"COUNT(*) FILTER (WHERE a.{kind} = %s) AS deploy FROM {table} a "
                f"WHERE k.{parent_id} IS NOT NULL AND a.{pk} = ANY({key_ancestor_ids_sql(q, 'k')})"
                f") chain ON TRUE {artifact_joins}"
            )
            self.params = lambda now, deploy, kid, build_id, path: [
                *(now, deploy, build_id, path, kid)
            ]
        else:
            # SQLite has no array to split ``lineage`` into: a recursive walk up ``parent``
            # (primary-key lookups, at most KEY_DERIVE_MAX_DEPTH steps; empty for a root key).
            dead = f"CASE WHEN {key_dead_sql(q, 'a')} THEN 1 ELSE 0 END"
            deploy = f"CASE WHEN a.{kind} = %s THEN 1 ELSE 0 END"
            self.sql = (
                f"WITH RECURSIVE chain(id, parent, dead, deploy) AS ("  # noqa: S608
                f"SELECT a.{pk}, a.{parent_id}, {dead}, {deploy} FROM {table} a WHERE a.{pk} = "
                f"(SELECT {parent_id} FROM {table} WHERE {pk} = %s) "
                f"UNION ALL SELECT a.{pk}, a.{parent_id}, {dead}, {deploy} FROM {table} a "
                f"INNER JOIN chain c ON a.{pk} = c.parent) "
                f"SELECT {columns}, "
                f"(SELECT COUNT(*) FROM chain WHERE chain.dead = 1), "
                f"(SELECT COUNT(*) FROM chain WHERE chain.deploy = 1) "
                f"FROM {table} k {joins}{artifact_joins}"
            )
            self.params = lambda now, deploy, kid, build_id, path: [
                *(now, deploy, kid),
                *(now, deploy, build_id, path, kid),
            ]

    def fetch(self, connection, *, kid: int, build_id: int, path: str | None):
        """(key, artifact or None), or None when no key has this id. The key carries its
        project, its build (if bound), ``dead_ancestors`` and ``deploy_ancestors``."""
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        deploy = ApiKey.Kind.DEPLOY.value
        with _hot_cursor(connection) as cursor:
            cursor.execute(self.sql, self.params(now, deploy, kid, build_id, path))
            row = cursor.fetchone()
        if row is None:
            return None
        key, build, project, artifact, blob = self.columns.decode(connection, row)
        key_attach(key, build, project)
        key.dead_ancestors, key.deploy_ancestors = row[-2], row[-1]
        if artifact is not None:
            artifact.blob = blob
        return key, artifact


@dataclass(frozen=True)
class LinkAccess:
    """What a signed link reaches: its key, and the artifact at its path (None if the link
    names a listing, or no artifact the key may read is there)."""

    key: ApiKey
    artifact: object | None


def link_check(*, kid: int, build_id: int, path: str | None = None) -> LinkAccess:
    """The key a signed link names, if it may still read: alive, every ancestor alive, holding
    ``artifacts:read`` now (a deploy token's shares stop when the project opts out); and the
    artifact at ``path`` (a cleaned artifact path) of build ``build_id`` if the key reaches it.
    Raises LinkKeyDead with the reason otherwise. One query (a prepared statement on
    PostgreSQL); whether the build is in reach is the caller's to ask (``key.build_id``, or
    tokens.access.visible_build for a key not bound to one build)."""
    connection = connections[ApiKey.objects.db]
    lookup = _LinkLookup.for_connection(connection.alias, connection.vendor)
    found = lookup.fetch(connection, kid=kid, build_id=build_id, path=path)
    if found is None:
        raise LinkKeyDead("key_unknown", "The key this link was signed under no longer exists.")
    key, artifact = found
    if key.is_revoked():
        raise LinkKeyDead("key_revoked", "This link was withdrawn: its key has been revoked.")
    if key.is_expired():
        raise LinkKeyDead("key_expired", "This link's key has expired.")
    if key.parent_id is not None and key.dead_ancestors:
        raise LinkKeyDead(
            "ancestor_revoked",
            "This link was withdrawn: the key it was shared from is revoked or expired.",
        )
    if key.parent_id is not None and not key.project.deploy_tokens_enabled and key.deploy_ancestors:
        raise LinkKeyDead(
            "deploy_tokens_disabled",
            "This link was shared by a deploy token, and the project has switched those off.",
        )
    if Scope.ARTIFACTS_READ not in key.effective_scopes:
        raise LinkKeyDead("missing_scope", "This link's key may no longer read artifacts.")
    if artifact is not None and (path is None or not path_allowed(key, path)):
        artifact = None
    return LinkAccess(key=key, artifact=artifact)


def link_key_check(*, kid: int) -> ApiKey:
    """The key a signed link names, if it may still read (``link_check`` without a path)."""
    return link_check(kid=kid, build_id=0, path=None).key
