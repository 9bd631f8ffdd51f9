from datetime import timedelta

import pytest
from django.utils import timezone

from devtools.factories import make_project_key
from devtools.receivers import Answer, Receiver
from tokens.scopes import Scope
from webhooks.models import Delivery, Subscription
from webhooks.services import delivery_attempt


@pytest.fixture(autouse=True)
def _webhook_settings(settings):
    """Receivers are plain http on 127.0.0.1: the guard admits exactly that network here."""
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 0, 0]
    settings.WEBHOOK_CONNECT_TIMEOUT = 2
    settings.WEBHOOK_READ_TIMEOUT = 5
    settings.PUBLIC_BASE_URL = "http://testserver"


@pytest.fixture
def manager_token(project) -> str:
    """A project key that may manage the project's webhooks."""
    return make_project_key(project, scopes=(Scope.BUILDS_CREATE, Scope.WEBHOOKS_MANAGE))


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def receiver_with(*answers: Answer) -> Receiver:
    return Receiver(*answers)


def subscribe(api, token, url, events=("build.succeeded",), slug="app", **extra):
    return api.as_key(token).post(
        f"/api/v1/projects/{slug}/webhooks/", {"url": url, "events": list(events), **extra}, "json"
    )


def attempt_all(limit: int = 20) -> int:
    """Run due attempts synchronously (what the worker does), until none is due."""
    made = 0
    for _ in range(limit):
        due = list(Delivery.objects.due().values_list("pk", flat=True))
        if not due:
            break
        for pk in due:
            made += delivery_attempt(delivery_id=pk) is not None
    return made


def rotate(api, token, subscription_id, slug="app") -> dict:
    response = api.as_key(token).post(
        f"/api/v1/projects/{slug}/webhooks/{subscription_id}/rotate-secret"
    )
    assert response.status_code == 201
    return response.json()


def previous_expire(subscription_id: int, index: int) -> None:
    """End the grace of the ``index``-th superseded secret (newest first), as if time had passed."""
    subscription = Subscription.objects.get(pk=subscription_id)
    ended = timezone.now() - timedelta(seconds=1)
    subscription.previous_secrets[index]["expires_at"] = ended.isoformat()
    subscription.save(update_fields=["previous_secrets"])
