"""Sharing a build's artifacts through signed links (``/dl/...``; format in ``signing.py``).

``share_links`` signs links under an existing key (webhook payloads sign under the key derived
for their subscription); ``share_create`` mints the share's own key first, so the share can be
withdrawn alone by revoking it.
"""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from tokens import services as token_services
from tokens.access import visible_artifacts
from tokens.models import ApiKey, AuditEvent

from . import signing
from .errors import InvalidArtifactPath, TooManyShares
from .models import Artifact, Share
from .paths import artifact_path_clean

DL_PREFIX = "/dl/builds/"


@dataclass(frozen=True)
class SharedLinks:
    url: str
    artifacts: list[dict]
    expires_at: datetime
    # More artifacts than ``artifacts`` holds are shared: the listing at ``url`` has them all.
    truncated: bool = False


def listing_path(build_id: int, prefix: str = "") -> str:
    """The (decoded) path of a build's listing: it ends with ``/``, which no artifact path does."""
    return f"{DL_PREFIX}{build_id}/{prefix}"


def artifact_path(build_id: int, path: str) -> str:
    return f"{DL_PREFIX}{build_id}/{path}"


def shared_artifacts(*, key: ApiKey, build, paths=None, prefix: str = ""):
    """The artifacts a link under ``key`` reaches: what the key sees, narrowed to ``prefix`` and
    to ``paths`` when given."""
    queryset = visible_artifacts(Artifact.objects.filter(build=build), key).select_related("blob")
    queryset = queryset.with_prefix(prefix or "")
    if paths:
        queryset = queryset.filter(path__in=list(paths))
    return queryset.order_by("path")


def listing_page(found, *, after: str | None, size: int) -> tuple[list, str | None]:
    """At most ``size`` of ``found`` (a queryset in path order) whose path sorts after
    ``after``, and the last path shown if more follow (None: this page is the last). Each page
    costs the same, however deep: it starts with an index lookup, not by skipping rows."""
    if after is not None:
        found = found.filter(path__gt=after)
    page = list(found[: size + 1])
    if len(page) <= size:
        return page, None
    return page[:size], page[size - 1].path


def sign_artifacts(*, artifacts, build_id: int, exp: int, kid: int, base_url: str) -> list[dict]:
    return [
        {
            "path": artifact.path,
            "size": artifact.blob.size,
            "sha256": artifact.blob.sha256,
            "url": signing.sign_url(
                base_url=base_url, path=artifact_path(build_id, artifact.path), exp=exp, kid=kid
            ),
        }
        for artifact in artifacts
    ]


def _listing_prefix(*, key: ApiKey, prefix: str, paths: list[str] | None) -> str:
    """The directory whose signed listing shows exactly what these links name, or ValueError.

    The listing a link opens is decided when it is opened, from the key alone: everything the
    key sees under the listing's directory, narrowed to the paths of the key's Share row if it
    has one. Links for a file-name prefix (``dist/app``) or for a list of paths would otherwise
    sign a listing showing more than was shared, so they are refused unless the key itself is
    that narrow (its path prefix, its Share row's paths).
    """
    directory = prefix[: prefix.rfind("/") + 1]
    if directory != prefix and not key.path_prefix.startswith(prefix):
        raise ValueError(
            f"A listing cannot be limited to the file-name prefix {prefix!r}: share a directory "
            "(ending with '/'), or share under a key limited to that prefix."
        )
    if paths is not None:
        recorded = Share.objects.filter(key=key).values_list("paths", flat=True).first()
        if sorted(set(paths)) != sorted(recorded or []):
            raise ValueError(
                "A listing cannot be limited to a list of paths without a Share recording "
                "them: use share_create, which mints a key whose listing shows only those."
            )
    return directory


def share_links(
    *,
    key: ApiKey,
    build,
    paths: list[str] | None = None,
    prefix: str | None = None,
    expires_at: datetime,
    base_url: str,
    limit: int | None = None,
) -> SharedLinks:
    """Sign a listing URL and one URL per artifact ``key`` may see (under ``prefix``, among
    ``paths``) under the existing ``key``: no key is minted. The links stop working at
    ``expires_at`` or when ``key`` (or an ancestor) is revoked or expires, whichever is first.
    With ``limit``, at most that many artifacts are signed (the first in path order) and
    ``truncated`` says whether there are more.

    ``prefix`` should be a directory (``dist/``): the listing URL is that directory's.
    """
    exp = int(expires_at.timestamp())
    prefix = prefix or ""
    listing_prefix = _listing_prefix(key=key, prefix=prefix, paths=paths)
    found = shared_artifacts(key=key, build=build, paths=paths, prefix=prefix)
    last = None
    if limit is not None:
        found, last = listing_page(found, after=None, size=limit)
    return SharedLinks(
        url=signing.sign_url(
            base_url=base_url, path=listing_path(build.pk, listing_prefix), exp=exp, kid=key.pk
        ),
        artifacts=sign_artifacts(
            artifacts=found, build_id=build.pk, exp=exp, kid=key.pk, base_url=base_url
        ),
        expires_at=expires_at,
        truncated=last is not None,
    )


def _expires_in_clean(expires_in: int | None) -> int:
    if expires_in is None:
        return settings.SHARE_DEFAULT_SECONDS
    maximum = settings.SHARE_MAX_SECONDS
    if isinstance(expires_in, bool) or not isinstance(expires_in, int):
        raise ValidationError({"expires_in": "A whole number of seconds."})
    if not 1 <= expires_in <= maximum:
        raise ValidationError({"expires_in": f"Between 1 and {maximum} seconds."})
    return expires_in


def _paths_clean(paths) -> list[str]:
    if paths is None:
        return []
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ValidationError({"paths": "A list of artifact paths."})
    if not paths:
        raise ValidationError({"paths": "Name at least one path, or leave 'paths' out."})
    if len(paths) > settings.SHARE_MAX_PATHS:
        raise ValidationError({"paths": f"At most {settings.SHARE_MAX_PATHS} paths per share."})
    cleaned = []
    for path in paths:
        try:
            cleaned.append(artifact_path_clean(path))
        except InvalidArtifactPath as error:
            raise ValidationError({"paths": f"{path!r}: {error.detail}"}) from None
    return sorted(set(cleaned))


def _live_shares_check(build) -> None:
    """Refuse a share beyond SHARE_MAX_LIVE_PER_BUILD live ones. Not serialised: concurrent
    requests may pass the cap by a few, which still bounds the keys minted."""
    maximum = settings.SHARE_MAX_LIVE_PER_BUILD
    live = Share.objects.filter(
        build=build, expires_at__gt=timezone.now(), key__revoked_at__isnull=True
    ).count()
    if live >= maximum:
        raise TooManyShares(
            f"This build has {maximum} live shares, the most it may have: revoke one (its "
            "key_id) or wait for one to expire."
        )


def share_create(
    *,
    key: ApiKey,
    build,
    paths: list[str] | None = None,
    prefix: str | None = None,
    expires_in: int | None,
    ip: str | None = None,
    base_url: str,
) -> Share:
    """Share ``paths`` (or everything under ``prefix``, or the whole build) of ``build`` as
    signed links, under a fresh read-only key derived from ``key``.

    Returns the Share with its links on ``.links`` (SharedLinks). Refusals (paths outside the
    sharer's prefix, a key that cannot read) are 403 and audited by ``tokens``.
    """
    expires_in = _expires_in_clean(expires_in)
    cleaned = _paths_clean(paths)
    if prefix is not None and not isinstance(prefix, str):
        raise ValidationError({"prefix": "A path prefix such as 'dist/'."})
    prefix = token_services.share_allowed(
        sharer=key, build=build, prefix=prefix or "", paths=cleaned, ip=ip
    )
    if cleaned:
        outside = [p for p in cleaned if not p.startswith(prefix)]
        if outside:
            raise ValidationError({"paths": f"Not under prefix {prefix!r}: {', '.join(outside)}"})
        present = set(
            shared_artifacts(key=key, build=build, paths=cleaned).values_list("path", flat=True)
        )
        missing = [p for p in cleaned if p not in present]
        if missing:
            raise ValidationError({"paths": f"No such artifact: {', '.join(missing[:10])}"})
    _live_shares_check(build)
    with transaction.atomic():
        share_key = token_services.key_mint_share(
            sharer=key, build=build, path_prefix=prefix, expires_in=expires_in
        )
        share = Share.objects.create(
            build=build,
            key=share_key,
            shared_by=key,
            paths=cleaned,
            prefix=share_key.path_prefix,
            expires_at=share_key.expires_at,
        )
        token_services.audit(
            action=AuditEvent.Action.SHARE,
            key=share_key,
            actor=f"key:{key.pk}",
            ip=ip,
            detail={
                "shared_by": key.pk,
                "paths": cleaned[:50],
                "path_count": len(cleaned),
                "prefix": share_key.path_prefix,
                "expires_at": share_key.expires_at.isoformat(),
            },
        )
    share.links = share_links(
        key=share_key,
        build=build,
        paths=cleaned or None,
        prefix=share_key.path_prefix,
        expires_at=share_key.expires_at,
        base_url=base_url,
    )
    return share
