import pytest
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from devtools.receivers import Answer, Receiver
from webhooks import crypto
from webhooks.models import Delivery, Subscription
from webhooks.services import _signing_secrets

from .conftest import attempt_all, rotate, subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("admin", "a@example.com", "pw-long-enough-1")
    client.force_login(user)
    return client


def act(client, model, action, pks):
    return client.post(
        f"/admin/webhooks/{model}/",
        {"action": action, "_selected_action": [str(pk) for pk in pks]},
        follow=True,
    )


def test_delivery_log_shows_attempts_escaped_and_redelivers(api, manager_token, staff):
    with Receiver(Answer(500, b"<script>alert(1)</script>"), Answer(200)) as receiver:
        subscribe(api, manager_token, receiver.url, events=["ping"])
        delivery = Delivery.objects.get()
        from webhooks.services import delivery_attempt

        delivery_attempt(delivery_id=delivery.pk)
        page = staff.get(f"/admin/webhooks/delivery/{delivery.pk}/change/")
        assert page.status_code == 200
        assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page.content
        assert b"<script>alert(1)</script>" not in page.content
        Delivery.objects.filter(pk=delivery.pk).update(state=Delivery.State.FAILED)
        assert act(staff, "delivery", "redeliver", [delivery.pk]).status_code == 200
        attempt_all()
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.DELIVERED
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


def test_admin_sends_a_ping_and_re_enables(api, manager_token, staff):
    with Receiver() as receiver:
        subscribe(api, manager_token, receiver.url)
        subscription = Subscription.objects.get()
        Subscription.objects.update(active=False, disabled_reason="410 Gone")
        listing = staff.get("/admin/webhooks/subscription/")
        assert b"410 Gone" in listing.content
        act(staff, "subscription", "enable", [subscription.pk])
        assert Subscription.objects.get().active
        act(staff, "subscription", "send_ping", [subscription.pk])
        attempt_all()
    assert [r.body.count(b'"type":"ping"') for r in receiver.received] == [1]


def test_reencrypt_command_moves_secrets_to_the_new_key(api, manager_token, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WEBHOOK_ENCRYPTION_KEYS = [old]
    secret = subscribe(api, manager_token, "https://ci.example/h").json()["signing_secret"]
    settings.WEBHOOK_ENCRYPTION_KEYS = [new, old]
    call_command("webhooks_reencrypt")
    settings.WEBHOOK_ENCRYPTION_KEYS = [new]
    assert crypto.decrypt(Subscription.objects.get().secret_encrypted) == secret


def test_reencrypt_command_moves_superseded_secrets_too(api, manager_token, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WEBHOOK_ENCRYPTION_KEYS = [old]
    created = subscribe(api, manager_token, "https://ci.example/h").json()
    secrets = [created["signing_secret"]]
    secrets += [rotate(api, manager_token, created["id"])["signing_secret"] for _ in range(2)]
    before = Subscription.objects.get().previous_secrets
    settings.WEBHOOK_ENCRYPTION_KEYS = [new, old]
    call_command("webhooks_reencrypt")
    settings.WEBHOOK_ENCRYPTION_KEYS = [new]
    subscription = Subscription.objects.get()
    after = subscription.previous_secrets
    assert [e["expires_at"] for e in after] == [e["expires_at"] for e in before]
    assert [crypto.decrypt(e["secret_encrypted"]) for e in after] == secrets[1::-1]
    assert _signing_secrets(subscription, timezone.now()) == secrets[::-1]


def test_admin_rotates_and_shows_until_when_old_secrets_sign_never_them(api, manager_token, staff):
    created = subscribe(api, manager_token, "https://ci.example/h").json()
    subscription = Subscription.objects.get()
    change = f"/admin/webhooks/subscription/{subscription.pk}/change/"
    assert "superseded secrets still signing:" in staff.get(change).content.decode().lower()

    page = act(staff, "subscription", "rotate_secret", [subscription.pk])
    assert page.status_code == 200
    (message,) = [str(m) for m in page.context["messages"]]
    new = Subscription.objects.get()
    assert crypto.decrypt(new.secret_encrypted) in message
    assert "signs too until" in message
    page = act(staff, "subscription", "rotate_secret", [subscription.pk])
    (message,) = [str(m) for m in page.context["messages"]]
    newest = crypto.decrypt(Subscription.objects.get().secret_encrypted)
    assert newest in message
    # Both superseded secrets (the first one and the admin's first) still sign.
    signing = _signing_secrets(Subscription.objects.get(), timezone.now())
    assert signing[0] == newest
    assert signing[2] == created["signing_secret"]

    shown = staff.get(change).content.decode()
    assert "2, until" in shown
    for secret in signing:
        assert secret not in shown
        assert secret.removeprefix("whsec_") not in shown
