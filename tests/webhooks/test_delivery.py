"""Sending: signatures checked by the Standard Webhooks reference implementation, auth, retries,
disabling, idempotency. Attempts run in the test process (what the worker's task calls) against
real HTTP receivers on 127.0.0.1."""

import json
import socket
import threading
import time
from datetime import timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from devtools.receivers import Answer, Receiver
from tokens.models import AuditEvent
from webhooks.models import Delivery, Subscription
from webhooks.services import _lease_take, delivery_attempt, ping_send

from .conftest import attempt_all, previous_expire, subscribe

pytestmark = pytest.mark.django_db


def verified(secret: str, request) -> dict:
    """What the reference implementation accepts (it raises on any mismatch)."""
    return Webhook(secret).verify(request.body, request.headers)


def ping(api, token, url, **extra):
    created = subscribe(api, token, url, events=["ping"], **extra).json()
    return created, Delivery.objects.get(subscription_id=created["id"])


def deliveries(api, token, subscription_id):
    url = f"/api/v1/projects/app/webhooks/{subscription_id}/deliveries/"
    return api.as_key(token).get(url).json()["results"]


def test_ping_is_signed_per_standard_webhooks(api, manager_token, receiver):
    created, _ = ping(api, manager_token, receiver.url)
    assert attempt_all() == 1
    (request,) = receiver.received
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"].startswith("msg_")
    payload = verified(created["signing_secret"], request)
    assert payload["type"] == "ping"
    assert payload["data"] == {"project": "app", "subscription": created["id"]}
    (delivery,) = deliveries(api, manager_token, created["id"])
    assert delivery["state"] == "delivered"
    assert delivery["attempts"][0]["status_code"] == 200


def test_during_rotation_both_secrets_verify_and_after_the_grace_only_the_new(
    api, manager_token, receiver, settings
):
    created, _ = ping(api, manager_token, receiver.url)
    rotate = f"/api/v1/projects/app/webhooks/{created['id']}/rotate-secret"
    new = api.as_key(manager_token).post(rotate).json()["signing_secret"]
    subscription = Subscription.objects.get()
    ping_send(subscription=subscription)
    attempt_all()
    assert len(receiver.received) == 2
    for request in receiver.received[1:]:
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        verified(created["signing_secret"], request)  # receivers not yet switched
        verified(new, request)  # receivers already switched
    previous_expire(subscription.pk, 0)
    ping_send(subscription=subscription)
    attempt_all()
    last = receiver.received[-1]
    verified(new, last)
    with pytest.raises(Exception, match=r"[Ss]ignature"):
        verified(created["signing_secret"], last)


def test_basic_auth_is_sent_when_configured(api, manager_token, receiver):
    ping(api, manager_token, receiver.url, basic_auth={"username": "ci", "password": "s3cr3t é"})
    attempt_all()
    import base64

    header = receiver.received[0].headers["authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == "ci:s3cr3t é"


def test_sigv4_signature_recomputes_with_botocore(api, manager_token, receiver):
    creds = {
        "access_key_id": "AKIDEXAMPLE",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "region": "eu-west-1",
        "service": "lambda",
    }
    url = receiver.url.replace("http://", "http+sigv4://")
    ping(api, manager_token, url, sigv4=creds)
    attempt_all()
    (request,) = receiver.received
    authorization = request.headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    fields = dict(part.strip().split("=", 1) for part in authorization.split(" ", 1)[1].split(","))
    signed = fields["SignedHeaders"].split(";")
    assert {"host", "x-amz-date", "webhook-id"} <= set(signed)
    # Rebuild the request the receiver saw and let botocore sign it with the known secret.
    rebuilt = AWSRequest(
        method="POST",
        url=f"http://{request.headers['host']}{request.path}",
        data=request.body,
        headers={name: request.headers[name] for name in signed},
    )
    rebuilt.context["timestamp"] = request.headers["x-amz-date"]
    auth = SigV4Auth(
        Credentials(creds["access_key_id"], creds["secret_access_key"]), "lambda", "eu-west-1"
    )
    string_to_sign = auth.string_to_sign(rebuilt, auth.canonical_request(rebuilt))
    assert auth.signature(string_to_sign, rebuilt) == fields["Signature"]
    # A body changed in transit would not match.
    rebuilt.data = request.body + b" "
    tampered = auth.string_to_sign(rebuilt, auth.canonical_request(rebuilt))
    assert auth.signature(tampered, rebuilt) != fields["Signature"]


def test_500_then_200_is_delivered_with_two_attempts_and_one_webhook_id(api, manager_token):
    with Receiver(Answer(500, b"boom"), Answer(200)) as receiver:
        created, _ = ping(api, manager_token, receiver.url)
        assert attempt_all() == 2
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    verified(created["signing_secret"], second)
    (delivery,) = deliveries(api, manager_token, created["id"])
    assert delivery["state"] == "delivered" and delivery["attempt_count"] == 2
    assert [a["status_code"] for a in delivery["attempts"]] == [200, 500]
    assert delivery["attempts"][1]["response_excerpt"] == "boom"


@pytest.mark.parametrize("status", [301, 302, 307, 308, 400, 404, 429, 500, 503])
def test_non_2xx_is_a_failure_and_redirects_are_not_followed(api, manager_token, status):
    answer = Answer(status, b"no", {"Location": "http://127.0.0.1:1/elsewhere"})
    with Receiver(answer) as receiver:
        _, delivery = ping(api, manager_token, receiver.url)
        attempt_all()
    assert len(receiver.received) == 3  # the whole (test) schedule, each to the same URL
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.FAILED
    assert {a.status_code for a in delivery.attempts.all()} == {status}


def test_410_gone_disables_the_subscription_at_once_and_audits_why(api, manager_token):
    with Receiver(Answer(410)) as receiver:
        created, _ = ping(api, manager_token, receiver.url)
        attempt_all()
    assert len(receiver.received) == 1
    subscription = Subscription.objects.get()
    assert not subscription.active and "410" in subscription.disabled_reason
    assert AuditEvent.objects.filter(action=AuditEvent.Action.WEBHOOK_DISABLED).count() == 1
    shown = api.as_key(manager_token).get(f"/api/v1/projects/app/webhooks/{created['id']}/")
    assert shown.json()["active"] is False and "410" in shown.json()["disabled_reason"]
    ping_send(subscription=subscription)
    assert attempt_all() == 0  # a disabled subscription gets nothing


def test_consecutive_failed_deliveries_disable_the_subscription(api, manager_token, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [0]
    settings.WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES = 2
    with Receiver(Answer(500)) as receiver:
        ping(api, manager_token, receiver.url)
        subscription = Subscription.objects.get()
        attempt_all()
        assert Subscription.objects.get().active
        ping_send(subscription=subscription)
        attempt_all()
    subscription.refresh_from_db()
    assert not subscription.active
    assert "2 deliveries in a row failed" in subscription.disabled_reason
    event = AuditEvent.objects.get(action=AuditEvent.Action.WEBHOOK_DISABLED)
    assert "HTTP 500" in event.reason


def test_a_success_resets_the_failure_count(api, manager_token, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [0]
    settings.WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES = 2
    with Receiver(Answer(500), Answer(200), Answer(500)) as receiver:
        ping(api, manager_token, receiver.url)
        subscription = Subscription.objects.get()
        for _ in range(2):
            attempt_all()
            ping_send(subscription=subscription)
        attempt_all()
    assert Subscription.objects.get().active


def test_retry_after_is_honoured(api, manager_token, settings):
    with Receiver(Answer(503, headers={"Retry-After": "120"})) as receiver:
        _, delivery = ping(api, manager_token, receiver.url)
        before = timezone.now()
        assert attempt_all() == 1  # the next attempt is not due yet
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.PENDING
    assert delivery.next_attempt_at >= before + timedelta(seconds=119)


def test_unreachable_receiver_is_a_failed_attempt_with_the_error(api, manager_token):
    with Receiver() as receiver:
        url = receiver.url
    _, delivery = ping(api, manager_token, url)  # nothing listens there any more
    attempt_all()
    attempt = delivery.attempts.first()
    assert attempt.status_code is None and "Connection" in attempt.error


def test_response_excerpt_is_capped(api, manager_token, settings):
    settings.WEBHOOK_RESPONSE_MAX_BYTES = 1000
    settings.WEBHOOK_RESPONSE_EXCERPT_CHARS = 100
    with Receiver(Answer(500, b"<script>x</script>" + b"A" * 100_000)) as receiver:
        _, delivery = ping(api, manager_token, receiver.url)
        delivery_attempt(delivery_id=delivery.pk)
    attempt = delivery.attempts.get()
    assert len(attempt.response_excerpt) == 100


def test_a_task_run_twice_sends_once(api, manager_token, receiver):
    _, delivery = ping(api, manager_token, receiver.url)
    assert delivery_attempt(delivery_id=delivery.pk) is not None
    assert delivery_attempt(delivery_id=delivery.pk) is None  # already delivered
    assert len(receiver.received) == 1


def test_an_attempt_in_flight_holds_off_a_second_run(api, manager_token, receiver):
    _, delivery = ping(api, manager_token, receiver.url)
    assert _lease_take(delivery.pk)  # another worker is sending it right now
    assert delivery_attempt(delivery_id=delivery.pk) is None
    assert receiver.received == []


def test_a_late_failure_never_overrides_the_success_of_the_attempt_that_took_over(
    api, manager_token
):
    """A first attempt whose lease lapsed (its worker was stuck) reports its failure after a
    second attempt delivered: the delivery stays delivered."""
    from webhooks import services, transport

    with Receiver(Answer(200)) as receiver:
        _, delivery = ping(api, manager_token, receiver.url)
        stale = _lease_take(delivery.pk)
        Delivery.objects.filter(pk=delivery.pk).update(lease_until=timezone.now())
        assert delivery_attempt(delivery_id=delivery.pk).succeeded
    services._outcome_record(
        delivery=Delivery.objects.get(pk=delivery.pk),
        token=stale,
        started_at=timezone.now(),
        duration_ms=1,
        outcome=transport.Outcome(500, b"", None, "", 1),
    )
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.DELIVERED
    assert delivery.attempts.count() == 2  # both logged


def test_redeliver_sends_again_with_the_same_webhook_id(api, manager_token, receiver):
    from webhooks.services import delivery_redeliver

    _, delivery = ping(api, manager_token, receiver.url)
    attempt_all()
    delivery_redeliver(delivery=delivery)
    attempt_all()
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert json.loads(second.body)["type"] == "ping"


def test_a_receiver_echoing_the_payload_does_not_put_secrets_in_the_log(api, manager_token):
    echoed = b'{"status_token": "acx_' + b"A" * 38 + b'", "url": "/dl/x?exp=1&kid=2&sig=abc"}'
    with Receiver(Answer(500, echoed)) as receiver:
        _, delivery = ping(api, manager_token, receiver.url)
        delivery_attempt(delivery_id=delivery.pk)
    excerpt = delivery.attempts.get().response_excerpt
    assert "acx_AAAA" not in excerpt and "sig=abc" not in excerpt


def test_deleting_a_subscription_during_an_attempt_is_harmless(api, manager_token):
    from webhooks import services, transport

    with Receiver() as receiver:
        created, delivery = ping(api, manager_token, receiver.url)
        token = _lease_take(delivery.pk)
        loaded = Delivery.objects.select_related("subscription").get(pk=delivery.pk)
        api.as_key(manager_token).delete(f"/api/v1/projects/app/webhooks/{created['id']}/")
        outcome = transport.Outcome(200, b"", None, "", 1)
        assert (
            services._outcome_record(
                delivery=loaded,
                token=token,
                started_at=timezone.now(),
                duration_ms=1,
                outcome=outcome,
            )
            is None
        )


@pytest.mark.parametrize("retry_after", ["\u00b2", "\u00b9\u00b2", "-5", "1e9", "soon", "9" * 5000])
def test_a_garbage_retry_after_on_a_success_is_still_a_success(api, manager_token, retry_after):
    # A header the receiver got wrong cannot turn its 200 into a failed attempt (and a resend).
    with Receiver(Answer(200, headers={"Retry-After": retry_after})) as receiver:
        _, delivery = ping(api, manager_token, receiver.url)
        assert attempt_all() == 1
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.DELIVERED, delivery.last_error
    assert len(receiver.received) == 1


@pytest.mark.parametrize("retry_after", ["\u00b2", "-5", "soon", "9" * 400])
def test_a_garbage_retry_after_on_a_failure_keeps_the_schedule(api, manager_token, retry_after):
    with Receiver(Answer(503, headers={"Retry-After": retry_after})) as receiver:
        _, delivery = ping(api, manager_token, receiver.url)
        attempt_all(limit=1)
    delivery.refresh_from_db()
    (attempt,) = delivery.attempts.all()
    assert attempt.status_code == 503 and attempt.error == "HTTP 503"


class Trickler:
    """A receiver that answers 200, one byte at a time (headers or body), each byte within the
    read timeout: it would hold a worker for as long as it likes. Stops by itself."""

    def __init__(self, *, slow_headers: bool, count: int = 60, every: float = 0.1) -> None:
        self.slow_headers, self.count, self.every = slow_headers, count, every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.settimeout(10)
            connection.recv(65536)
            slow = b"a" * self.count
            if self.slow_headers:
                head = b"HTTP/1.1 200 OK\r\nX-Slow: "
                trickled = slow + b"\r\nContent-Length: 2\r\n\r\nok"
            else:
                head, trickled = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(slow), slow
            try:
                connection.sendall(head)
                for i in range(len(trickled)):
                    connection.sendall(trickled[i : i + 1])
                    time.sleep(self.every)
            except OSError:
                pass  # the sender gave up: what the test wants

    def __enter__(self) -> "Trickler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.thread.join(30)
        self.listener.close()


@pytest.mark.parametrize("slow_headers", [True, False], ids=["headers", "body"])
def test_a_receiver_trickling_its_answer_is_cut_off_at_the_overall_deadline(
    api, manager_token, settings, slow_headers
):
    # Each byte comes within the read timeout, so only an overall deadline stops the attempt;
    # without it the worker is held until the task's hard time limit kills it, the attempt is
    # never recorded and the delivery is retried (and killed) forever.
    settings.WEBHOOK_CONNECT_TIMEOUT = 0.5
    settings.WEBHOOK_READ_TIMEOUT = 0.5
    with Trickler(slow_headers=slow_headers) as receiver:
        _, delivery = ping(api, manager_token, receiver.url)
        attempt = delivery_attempt(delivery_id=delivery.pk)
    assert attempt is not None and not attempt.succeeded
    assert "deadline" in attempt.error
