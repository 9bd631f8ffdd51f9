"""What a key may see: the one place that turns a key into queryset filters.

Every API queryset starts here, so an object outside the key's resource is simply not found
(404), never "forbidden": existence does not leak across builds or projects.
"""

import re

from django.db.models import Q, QuerySet
from django.db.models.functions import Substr

from artifactcourier.paths import path_problem

from .models import ApiKey
from .scopes import Scope

# Ref globs stay in a small alphabet so the regex built from them means the same on every
# database (PostgreSQL's regex dialect is not Python's).
_REF_PATTERN = re.compile(r"[A-Za-z0-9._/*?@+-]{1,255}")


def ref_pattern_validate(pattern: str) -> str:
    """Return ``pattern`` if it is a usable ref glob (``refs/tags/v*``), else raise ValueError."""
    if not _REF_PATTERN.fullmatch(pattern):
        raise ValueError(
            "Use a ref glob of letters, digits and . _ / @ + -, with * and ? as wildcards "
            "(at most 255 characters), e.g. refs/tags/*."
        )
    return pattern


def glob_to_regex(pattern: str) -> str:
    """A ref glob (``refs/tags/*``) as an anchored database regex: ``*`` matches any run of
    characters, ``?`` one character. (Not ``fnmatch.translate``: since Python 3.11 it emits
    atomic groups, which PostgreSQL's regex engine rejects.)"""
    wildcards = {"*": ".*", "?": "."}
    # \Z, not $: on SQLite (Python's re.search) "$" also matches before a trailing newline.
    return "^" + "".join(wildcards.get(ch) or re.escape(ch) for ch in pattern) + r"\Z"


def path_prefix_validate(prefix: str) -> str:
    """Return ``prefix`` as a directory (``dist`` becomes ``dist/``, so it never reaches
    ``dist-private/``) if it is a relative artifact path prefix, else raise ValueError."""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if len(prefix) > 512:
        raise ValueError("A path prefix has at most 512 characters.")
    # Every segment complete (it ends in "/"): the artifact path policy, as for paths.
    if problem := path_problem(prefix, prefix=True):
        raise ValueError(f"A path prefix {problem}.")
    return prefix


def _build_filter(key: ApiKey, field: str) -> Q:
    """Q for builds this key reaches; ``field`` is the path from the queried model to Build."""
    prefix = f"{field}__" if field else ""
    q = Q(**{f"{prefix}project_id": key.project_id})
    if key.build_id is not None:
        q &= Q(**{field or "pk": key.build_id})
    if key.ref_pattern:
        q &= Q(**{f"{prefix}ref__regex": glob_to_regex(key.ref_pattern)})
    return q


def visible_projects(queryset: QuerySet, key: ApiKey) -> QuerySet:
    return queryset.filter(pk=key.project_id)


def manageable_projects(queryset: QuerySet, *, key: ApiKey | None, user) -> QuerySet:
    """Projects whose credentials the caller may manage: a key's own project, or every project
    for a staff user (the caller's scope or staff status is checked by the permission class)."""
    if isinstance(key, ApiKey):
        return visible_projects(queryset, key)
    if user is not None and user.is_active and user.is_staff:
        return queryset
    return queryset.none()


def revocable_keys(queryset: QuerySet, key: ApiKey) -> QuerySet:
    """Keys ``key`` may revoke: itself and everything derived from it (never an ancestor); with
    tokens:manage, also its project's deploy tokens and what was derived from them. A shared
    key finds itself here too, so that asking is an audited 403, not a 404
    (tokens.services.key_revoke_by refuses it)."""
    q = Q(pk=key.pk) | Q(lineage__startswith=key.subtree_lineage)
    if Scope.TOKENS_MANAGE in key.effective_scopes:
        # Bound to no build and not a project key: a deploy token or derived from one (project
        # keys are never granted keys:mint, so nothing else derives without a build).
        q |= Q(
            project_id=key.project_id,
            build__isnull=True,
            kind__in=[ApiKey.Kind.DEPLOY, ApiKey.Kind.DERIVED],
        )
    return queryset.filter(q)


def visible_build(queryset: QuerySet, key: ApiKey, build_id: int) -> QuerySet:
    """The build ``build_id`` if the key reaches it: a queryset of at most one row."""
    if key.build_id is not None:
        # A build-bound key reaches exactly its own build: any other id is empty, no query.
        return queryset.filter(pk=build_id) if build_id == key.build_id else queryset.none()
    return queryset.filter(_build_filter(key, ""), pk=build_id)


def under_prefix(queryset: QuerySet, prefix: str, field: str = "path") -> QuerySet:
    """Rows whose ``field`` starts with ``prefix``, compared byte for byte.

    Not ``__startswith``: on SQLite that is ``LIKE``, which ignores case, so a key limited to
    ``dist/`` would also read ``DIST/secret``.
    """
    if not prefix:
        return queryset
    return queryset.alias(_under_prefix=Substr(field, 1, len(prefix))).filter(_under_prefix=prefix)


def visible_artifacts(queryset: QuerySet, key: ApiKey) -> QuerySet:
    """Artifacts of the builds the key reaches, under its path prefix if it has one."""
    queryset = queryset.filter(_build_filter(key, "build"))
    return under_prefix(queryset, key.path_prefix)


def path_allowed(key: ApiKey, path: str) -> bool:
    """May this key touch an artifact at ``path``? (Used for writes, where no row exists yet.)"""
    return not key.path_prefix or path.startswith(key.path_prefix)
