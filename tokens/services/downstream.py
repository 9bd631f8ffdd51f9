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
def keys_derive_for_downstream(
    *, build, scope_sets: Iterable[Iterable[Scope]], name: str, actor: str
) -> list[ApiKey]:
    """Keys derived from ``build``'s own key, one per entry of ``scope_sets``, each holding only
    those scopes (a subset of DOWNSTREAM_SCOPES and of what the build key was granted), bound
    to that build alone and expiring with the build key.

    The system derives them, not the build's job: so they need no keys:mint (an untrusted
    build's key lacks it, yet its project may opt in to webhooks). Tokens are re-derivable from
    a random seed (``key_token``), so each retry of a delivery carries the same token without
    storing it. Revoking the build key (or one of these) cuts the downstream off.

    No row lock on the build key: hundreds of deliveries derive at once, and a key derived in a
    race with the build key's revocation is refused anyway, since every use checks that all
    ancestors are alive.
    """
    parent = ApiKey.objects.filter(kind=ApiKey.Kind.BUILD, build=build).order_by("pk").first()
    if parent is None or not parent.is_alive():
        raise KeyForbidden("The build's key is revoked or expired.", code="revoked")
    keys = []
    for scopes in scope_sets:
        wanted = frozenset(Scope(s) for s in scopes)
        if not wanted or not wanted <= DOWNSTREAM_SCOPES or not wanted <= set(parent.scopes):
            raise KeyForbidden("A downstream key reads artifacts or reports a status, no more.")
        key, _ = _create(
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
        keys.append(key)
    return keys


def key_token(key: ApiKey) -> str:
    """The token of a re-derivable key (one minted with a seed)."""
    if not key.seed:
        raise ValueError("this key's token is not re-derivable")
    return crypto.token_derive(key.kind, secret=settings.TOKEN_PEPPER, seed=key.seed)
