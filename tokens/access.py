"""What a key may see: the one place that turns a key into queryset filters.

Every API queryset starts here, so an object outside the key's resource is simply not found
(404), never "forbidden": existence does not leak across builds or projects.
"""

import fnmatch

from django.db.models import Q, QuerySet

from .models import ApiKey


def glob_to_regex(pattern: str) -> str:
    """A ref glob (``refs/tags/*``) as a database regex. ``*`` matches any run of characters."""
    return fnmatch.translate(pattern).replace(r"\Z", "$").replace("(?s:", "^(?:")


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


def visible_builds(queryset: QuerySet, key: ApiKey) -> QuerySet:
    if key.build_id is not None:
        # A build-bound key reaches exactly its build (the hot path: keep the query simple).
        return queryset.filter(pk=key.build_id)
    return queryset.filter(_build_filter(key, ""))


def visible_artifacts(queryset: QuerySet, key: ApiKey) -> QuerySet:
    """Artifacts of the builds the key reaches, under its path prefix if it has one."""
    queryset = queryset.filter(_build_filter(key, "build"))
    if key.path_prefix:
        queryset = queryset.filter(path__startswith=key.path_prefix)
    return queryset


def path_allowed(key: ApiKey, path: str) -> bool:
    """May this key touch an artifact at ``path``? (Used for writes, where no row exists yet.)"""
    return not key.path_prefix or path.startswith(key.path_prefix)
