"""Signing-secret rotation: every superseded secret signs until its own grace ends, however many
rotations follow; at most WEBHOOK_SECRET_PREVIOUS_MAX of them. Deliveries go to a real receiver
on 127.0.0.1 that verifies them with the Standard Webhooks reference implementation."""

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from webhooks import crypto
from webhooks.models import Subscription
from webhooks.services import _signing_secrets, ping_send

from .conftest import attempt_all, previous_expire, rotate, subscribe

pytestmark = pytest.mark.django_db


def verifies(secret: str, request) -> bool:
    """Whether a receiver holding only ``secret`` accepts the delivery."""
    try:
        Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    return True


def delivered_ping(receiver, subscription_id: int):
    ping_send(subscription=Subscription.objects.get(pk=subscription_id))
    attempt_all()
    return receiver.received[-1]


def signatures(request) -> list[str]:
    return request.headers["webhook-signature"].split(" ")


def test_a_secret_superseded_twice_signs_until_its_own_grace_ends(api, manager_token, receiver):
    created = subscribe(api, manager_token, receiver.url, events=["ping"]).json()
    sub_id, a = created["id"], created["signing_secret"]
    first = rotate(api, manager_token, sub_id)  # A -> B
    second = rotate(api, manager_token, sub_id)  # B -> C, well within A's grace
    b, c = first["signing_secret"], second["signing_secret"]

    request = delivered_ping(receiver, sub_id)
    assert len(signatures(request)) == 3
    # A receiver still on A, one that switched to B, one already on C: none misses a delivery.
    assert [verifies(s, request) for s in (a, b, c)] == [True, True, True]

    # Each answer's previous_secret_expires_at is the grace of the secret it superseded.
    stored = Subscription.objects.get(pk=sub_id).previous_secrets
    expiries = [datetime.fromisoformat(entry["expires_at"]) for entry in stored]
    assert expiries == [
        datetime.fromisoformat(second["previous_secret_expires_at"]),  # B's
        datetime.fromisoformat(first["previous_secret_expires_at"]),  # A's
    ]
    assert expiries[0] >= expiries[1]

    previous_expire(sub_id, 1)  # A's grace ends; B's has not
    request = delivered_ping(receiver, sub_id)
    assert len(signatures(request)) == 2
    assert [verifies(s, request) for s in (a, b, c)] == [False, True, True]

    previous_expire(sub_id, 0)  # B's ends too
    request = delivered_ping(receiver, sub_id)
    assert len(signatures(request)) == 1
    assert [verifies(s, request) for s in (a, b, c)] == [False, False, True]


def test_at_most_previous_max_superseded_secrets_sign_oldest_dropped_first(
    api, manager_token, receiver, settings
):
    settings.WEBHOOK_SECRET_PREVIOUS_MAX = 2
    created = subscribe(api, manager_token, receiver.url, events=["ping"]).json()
    sub_id = created["id"]
    secrets = [created["signing_secret"]]
    for _ in range(4):
        secrets.append(rotate(api, manager_token, sub_id)["signing_secret"])

    stored = Subscription.objects.get(pk=sub_id).previous_secrets
    assert [crypto.decrypt(entry["secret_encrypted"]) for entry in stored] == secrets[-2::-1][:2]
    request = delivered_ping(receiver, sub_id)
    assert len(signatures(request)) == 3
    # The two oldest went first although their grace had not ended.
    assert [verifies(s, request) for s in secrets] == [False, False, True, True, True]


def test_lowering_previous_max_bounds_the_signatures_at_once(api, manager_token, settings):
    created = subscribe(api, manager_token, "https://ci.example/hook").json()
    for _ in range(3):
        rotate(api, manager_token, created["id"])
    subscription = Subscription.objects.get(pk=created["id"])
    assert len(_signing_secrets(subscription, timezone.now())) == 4
    settings.WEBHOOK_SECRET_PREVIOUS_MAX = 1
    assert len(_signing_secrets(subscription, timezone.now())) == 2


def test_the_default_bound_is_five(api, manager_token):
    created = subscribe(api, manager_token, "https://ci.example/hook").json()
    for _ in range(7):
        rotate(api, manager_token, created["id"])
    assert len(Subscription.objects.get(pk=created["id"]).previous_secrets) == 5


def test_an_expired_secret_never_signs_and_goes_at_the_next_rotation(api, manager_token):
    created = subscribe(api, manager_token, "https://ci.example/hook").json()
    sub_id, a = created["id"], created["signing_secret"]
    b = rotate(api, manager_token, sub_id)["signing_secret"]
    previous_expire(sub_id, 0)
    subscription = Subscription.objects.get(pk=sub_id)
    assert _signing_secrets(subscription, timezone.now()) == [b]  # no rotation needed for that

    c = rotate(api, manager_token, sub_id)["signing_secret"]
    stored = Subscription.objects.get(pk=sub_id).previous_secrets
    assert [crypto.decrypt(entry["secret_encrypted"]) for entry in stored] == [b]
    subscription.refresh_from_db()
    assert _signing_secrets(subscription, timezone.now()) == [c, b]
    assert a not in _signing_secrets(subscription, timezone.now())


def test_a_secret_signs_until_its_expiry_not_after(api, manager_token):
    created = subscribe(api, manager_token, "https://ci.example/hook").json()
    rotated = rotate(api, manager_token, created["id"])
    subscription = Subscription.objects.get(pk=created["id"])
    expires_at = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    before = _signing_secrets(subscription, expires_at - timedelta(microseconds=1))
    assert before == [rotated["signing_secret"], created["signing_secret"]]
    assert _signing_secrets(subscription, expires_at) == [rotated["signing_secret"]]


def test_no_grace_kept_when_previous_max_is_zero(api, manager_token, receiver, settings):
    settings.WEBHOOK_SECRET_PREVIOUS_MAX = 0
    created = subscribe(api, manager_token, receiver.url, events=["ping"]).json()
    before = timezone.now()
    rotated = rotate(api, manager_token, created["id"])
    # The answer stays meaningful: the superseded secret stopped signing at the rotation.
    assert before <= datetime.fromisoformat(rotated["previous_secret_expires_at"]) <= timezone.now()
    assert Subscription.objects.get(pk=created["id"]).previous_secrets == []
    request = delivered_ping(receiver, created["id"])
    assert verifies(rotated["signing_secret"], request)
    assert not verifies(created["signing_secret"], request)


def test_superseded_secrets_stay_encrypted_at_rest(api, manager_token):
    created = subscribe(api, manager_token, "https://ci.example/hook").json()
    sub_id = created["id"]
    secrets = [created["signing_secret"]]
    secrets += [rotate(api, manager_token, sub_id)["signing_secret"] for _ in range(2)]
    table = connection.ops.quote_name(Subscription._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT previous_secrets, secret_encrypted FROM {table}")
        raw = " ".join(str(value) for row in cursor.fetchall() for value in row)
    for secret in secrets:
        assert secret not in raw
        assert secret.removeprefix("whsec_") not in raw
    stored = Subscription.objects.get(pk=sub_id).previous_secrets
    assert [crypto.decrypt(entry["secret_encrypted"]) for entry in stored] == secrets[1::-1]
