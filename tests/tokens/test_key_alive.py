"""tokens.services.key_alive: "is this key, and every key it came from, alive now?", read from
the database (callers hold an instance loaded when the request began)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tokens.models import ApiKey
from tokens.services import key_alive, key_derive, key_revoke

pytestmark = pytest.mark.django_db


def test_a_live_key_and_a_live_chain_are_alive(build):
    child, _ = key_derive(parent=build.key, scopes=["artifacts:read", "keys:mint"])
    grandchild, _ = key_derive(parent=child, scopes=["artifacts:read"])
    assert key_alive(key=build.key)
    assert key_alive(key=grandchild)


def test_revocation_after_loading_is_seen(build):
    stale = ApiKey.objects.get(pk=build.key.pk)
    key_revoke(key=build.key, reason="test", actor="system")
    assert stale.revoked_at is None  # the caller's instance still says alive
    assert not key_alive(key=stale)


def test_a_revoked_or_expired_ancestor_kills_the_chain(build):
    child, _ = key_derive(parent=build.key, scopes=["artifacts:read", "keys:mint"])
    grandchild, _ = key_derive(parent=child, scopes=["artifacts:read"])
    ApiKey.objects.filter(pk=child.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert not key_alive(key=grandchild)
    assert key_alive(key=build.key)


def test_an_expired_key_is_not_alive(build):
    ApiKey.objects.filter(pk=build.key.pk).update(expires_at=timezone.now())
    assert not key_alive(key=build.key)
