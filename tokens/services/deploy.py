"""Deploy tokens: minted on first use, handed to trusted builds, rotated with a grace period."""

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from .. import crypto
from ..access import ref_pattern_validate
from ..errors import KeyConflict
from ..models import ApiKey, AuditEvent
from ..scopes import DEPLOY_KEY_SCOPES
from .minting import _create, audit


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
            "with a key holding tokens:manage) and rotate again.",
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
        key, token = _rotate_locked(
            project=project,
            head=head,
            expires_in=expires_in,
            ref_pattern=ref_pattern,
            created_by=created_by,
            actor=actor,
            now=now,
        )
        previous = ApiKey.objects.get(pk=head.pk) if head else None
        return RotatedDeployToken(key, token, _grace_period_shown(previous), True)


def _rotate_locked(
    *,
    project,
    head: ApiKey | None,
    expires_in: int | None,
    ref_pattern: str,
    created_by,
    actor: str,
    now,
    reason: str = "",
) -> tuple[ApiKey, str]:
    """Mint the token replacing ``head`` and retire every other live one at the end of the
    grace period. The caller holds the project row lock."""
    grace_end = now + timedelta(seconds=settings.DEPLOY_TOKEN_ROTATION_GRACE_SECONDS)
    lifetime = deploy_token_max_seconds() if expires_in is None else expires_in
    key, token = deploy_token_mint(
        project=project,
        expires_in=lifetime,
        ref_pattern=ref_pattern,
        replaces=head,
        created_by=created_by,
        actor=actor,
    )
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
        reason=reason,
        detail={
            "previous": [old.pk for old in retiring],
            "grace_ends_at": grace_end.isoformat(),
            "expires_in": lifetime,
        },
    )
    return key, token


def deploy_token_rotate_away(*, key: ApiKey, reason: str) -> RotatedDeployToken | None:
    """Rotate the project's deploy token away from ``key`` (the tripwire's answer for a shared
    token): if ``key`` is still the current token, a new one replaces it with the same
    restriction and the normal grace period. None if ``key`` was already replaced (it is
    retiring anyway) or is dead: nothing to do.

    Not deploy_token_rotate: a rotation inside the previous one's grace period answers that
    rotation's token, which here would be the very token to get rid of.
    """
    with transaction.atomic():
        project = type(key.project).objects.select_for_update().get(pk=key.project_id)
        head = _deploy_token_head(project)
        now = timezone.now()
        if head is None or head.pk != key.pk or not head.is_alive(now):
            return None
        new, token = _rotate_locked(
            project=project,
            head=head,
            expires_in=None,
            ref_pattern=head.ref_pattern,
            created_by=None,
            actor="system",
            now=now,
            reason=reason,
        )
        previous = ApiKey.objects.get(pk=head.pk)
        return RotatedDeployToken(new, token, _grace_period_shown(previous), True)
