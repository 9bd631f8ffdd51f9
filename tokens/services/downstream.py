"""Keys the system hands a downstream (webhook subscriber) for one finished build."""

import secrets
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction

from .. import crypto
from ..errors import KeyForbidden
from ..models import ApiKey, AuditEvent
from ..scopes import Scope
from .minting import _create, audit

# What a downstream may be handed: read the build's artifacts, report a status back.
DOWNSTREAM_SCOPES = frozenset({Scope.ARTIFACTS_READ, Scope.BUILD_STATUS})


@transaction.atomic
def key_derive_for_downstream(
    *, build, scopes: Iterable[Scope], name: str, actor: str
) -> tuple[ApiKey, str]:
    """A key derived from ``build``'s own key holding only ``scopes`` (a subset of
    DOWNSTREAM_SCOPES and of what the build key was granted), on that build alone.

    The system derives it, not the build's job: so it does not need keys:mint (an untrusted
    build's key lacks it, yet its project may opt in to webhooks), and it is re-derivable from a
    random seed, so each retry of a delivery can carry the same token without storing it.
    Revoking the build key (or this key) cuts the downstream off.
    """
    wanted = frozenset(Scope(s) for s in scopes)
    parent = (
        ApiKey.objects.select_for_update()
        .filter(kind=ApiKey.Kind.BUILD, build=build)
        .order_by("pk")
        .first()
    )
    if parent is None or not parent.is_alive():
        raise KeyForbidden("The build's key is revoked or expired.", code="revoked")
    if not wanted or not wanted <= DOWNSTREAM_SCOPES or not wanted <= set(parent.scopes):
        raise KeyForbidden("A downstream key reads artifacts or reports a status, nothing else.")
    key, token = _create(
        kind=ApiKey.Kind.DERIVED,
        project=parent.project,
        build=build,
        parent=parent,
        scopes=wanted,
        name=name,
        expires_at=parent.expires_at,
        seed=secrets.token_hex(32),
    )
    audit(
        action=AuditEvent.Action.DERIVE,
        key=key,
        actor=actor,
        detail={"parent": parent.pk, "scopes": key.scopes, "for": name},
    )
    return key, token


def key_token(key: ApiKey) -> str:
    """The token of a re-derivable key (one minted with a seed)."""
    if not key.seed:
        raise ValueError("this key's token is not re-derivable")
    return crypto.token_derive(key.kind, secret=settings.TOKEN_PEPPER, seed=key.seed)
