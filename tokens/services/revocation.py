"""Revoking a key and everything derived from it."""

from django.db import transaction
from django.utils import timezone

from ..models import ApiKey, AuditEvent
from .minting import audit


@transaction.atomic
def key_revoke(*, key: ApiKey, reason: str, actor: str) -> int:
    """Revoke a key and every key derived from it. Returns how many keys were revoked.

    Revoking an already revoked key is a no-op (0, no audit event), so retries are harmless.
    """
    # Serialises with key_derive, which locks the whole ancestor chain: a child is either
    # committed before this update (and revoked by it) or refused.
    list(ApiKey.objects.select_for_update().filter(pk=key.pk).values_list("pk"))
    now = timezone.now()
    count = (
        ApiKey.objects.subtree_of(key)
        .filter(revoked_at__isnull=True)
        .update(revoked_at=now, revoked_reason=reason[:200])
    )
    key.refresh_from_db()
    if not count:
        return 0
    audit(
        action=AuditEvent.Action.REVOKE,
        key=key,
        actor=actor,
        reason=reason,
        detail={"revoked_keys": count},
    )
    return count
