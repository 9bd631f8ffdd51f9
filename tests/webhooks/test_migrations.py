"""webhooks 0002/0003: the single previous signing secret becomes the first entry of the list,
still encrypted as it was; reversing puts the newest superseded secret back."""

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from webhooks import crypto, services
from webhooks.models import Subscription

BEFORE = [("webhooks", "0001_initial")]
AFTER = [("webhooks", "0003_remove_subscription_previous_secret_pair")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


@pytest.fixture
def at_0001(transactional_db):
    apps = migrate(BEFORE)
    yield apps
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_an_existing_previous_secret_is_carried_over_and_back(at_0001, project):
    Old = at_0001.get_model("webhooks", "Subscription")
    a, b = crypto.signing_secret_generate(), crypto.signing_secret_generate()
    expires_at = timezone.now() + timedelta(hours=3)
    previous_encrypted = crypto.encrypt(a)
    rotated = Old.objects.create(
        project_id=project.pk,
        url="https://ci.example/rotated",
        events=["ping"],
        secret_encrypted=crypto.encrypt(b),
        previous_secret_encrypted=previous_encrypted,
        previous_secret_expires_at=expires_at,
    )
    never = Old.objects.create(
        project_id=project.pk,
        url="https://ci.example/never",
        events=["ping"],
        secret_encrypted=crypto.encrypt(b),
    )

    migrate(AFTER)
    row = Subscription.objects.get(pk=rotated.pk)
    (entry,) = row.previous_secrets
    assert entry["secret_encrypted"] == previous_encrypted  # moved, not re-encrypted or decrypted
    assert datetime.fromisoformat(entry["expires_at"]) == expires_at
    # It keeps signing until its grace ends, and survives the next rotation alongside B.
    assert services._signing_secrets(row, timezone.now()) == [b, a]
    c = services.subscription_rotate_secret(subscription=row).signing_secret
    row.refresh_from_db()
    assert services._signing_secrets(row, timezone.now()) == [c, b, a]
    assert Subscription.objects.get(pk=never.pk).previous_secrets == []

    # Back: the old pair holds the newest superseded secret (B), the one the old code signed with.
    at_0001 = migrate(BEFORE)
    Old = at_0001.get_model("webhooks", "Subscription")
    back = Old.objects.get(pk=rotated.pk)
    assert crypto.decrypt(back.secret_encrypted) == c
    assert crypto.decrypt(back.previous_secret_encrypted) == b
    assert back.previous_secret_expires_at == datetime.fromisoformat(
        row.previous_secrets[0]["expires_at"]
    )
    never_back = Old.objects.get(pk=never.pk)
    assert never_back.previous_secret_encrypted == ""
    assert never_back.previous_secret_expires_at is None
