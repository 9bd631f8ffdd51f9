"""Revoking a key and everything derived from it."""

from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone

from ..access import revocable_keys
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


def key_revoke_by(*, caller: ApiKey, key_id: int, ip: str | None, path: str) -> int:
    """DELETE /api/v1/keys/{id}: ``caller`` revokes a key it may revoke (tokens.access), or 404.

    A shared key (deploy token) may not revoke itself: every other holder would be cut off by
    one job. Asking is an audited 403 that counts toward the tripwire.
    """
    from .denials import shared_key_self_revoke_denied

    key = get_object_or_404(revocable_keys(ApiKey.objects, caller), pk=key_id)
    if key.pk == caller.pk and caller.is_shared:
        raise shared_key_self_revoke_denied(key=caller, ip=ip, path=path)
    return key_revoke(key=key, reason="revoked via API", actor=f"key:{caller.pk}")
