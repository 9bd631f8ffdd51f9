"""Webhooks through the real processes: gunicorn, a Celery worker (with beat) on Redis, receivers
on 127.0.0.1. Also the faults: the broker down while builds finish, a worker killed mid-send."""

import hashlib
import json
import subprocess
import threading
import time

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from devtools.receivers import Answer, Receiver
from devtools.servers import free_port, stop, wait_for_port
from devtools.stack import Stack

from .conftest import REDIS_URL, require_redis

pytestmark = pytest.mark.slow

FAST_RETRIES = {
    "WEBHOOK_RETRY_SCHEDULE": "0,1,1,1,1",
    "WEBHOOK_SWEEP_EVERY_SECONDS": "1",
    "WEBHOOK_REQUEUE_AFTER_SECONDS": "3",
    "WEBHOOK_CONNECT_TIMEOUT": "1",
    "WEBHOOK_READ_TIMEOUT": "3",
    "WEBHOOK_LEASE_SECONDS": "16",
}
ARTIFACT = b"the bytes downstream wants\n" * 100


class Client:
    def __init__(self, stack: Stack) -> None:
        self.base = stack.base_url
        self.http = requests.Session()

    def call(self, method, path, token, expect=None, **kwargs):
        response = self.http.request(
            method,
            self.base + path,
            headers={"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})},
            timeout=30,
            **kwargs,
        )
        if expect is not None:
            assert response.status_code == expect, (path, response.status_code, response.text)
        return response

    def subscribe(self, manager, url, events=("build.succeeded",)) -> dict:
        return self.call(
            "POST",
            "/api/v1/projects/app/webhooks/",
            manager,
            201,
            json={"url": url, "events": list(events)},
        ).json()

    def build(self, builder) -> dict:
        return self.call(
            "POST",
            "/api/v1/projects/app/builds/",
            builder,
            201,
            json={"ref": "refs/heads/main", "commit": "ab" * 20, "trusted": True},
        ).json()

    def upload_and_finish(self, build, path="dist/app.txt", body=ARTIFACT):
        token = build["key"]["token"]
        self.call("PUT", f"/api/v1/builds/{build['id']}/artifacts/{path}", token, 201, data=body)
        self.call(
            "POST", f"/api/v1/builds/{build['id']}/finish", token, 200, json={"state": "succeeded"}
        )

    def deliveries(self, manager, subscription_id) -> list[dict]:
        path = f"/api/v1/projects/app/webhooks/{subscription_id}/deliveries/"
        return self.call("GET", path, manager, 200).json()["results"]


def wait_until(predicate, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached within {timeout}s")


def wait_for_builds(stack: Stack, receiver: Receiver, builds: list[dict], timeout=90) -> None:
    """Until a delivery of every build in ``builds`` reached ``receiver``. A timeout says whether
    the worker is still running and how its log ends: a worker that exited delivers nothing."""
    wanted = {build["id"] for build in builds}

    def delivered() -> set[int]:
        return {json.loads(r.body)["data"]["build"]["id"] for r in list(receiver.received)}

    try:
        wait_until(lambda: wanted <= delivered(), timeout, f"deliveries of builds {sorted(wanted)}")
    except TimeoutError as error:
        worker = "is running" if stack.worker.poll() is None else "exited"
        raise AssertionError(
            f"{error}, got {sorted(delivered())}; the worker {worker}, its log ends:\n"
            + stack.worker_log_tail()
        ) from None


def stack_keys(stack: Stack) -> tuple[str, str]:
    manager = stack.project_key("app", "builds:create", "webhooks:manage")
    return manager, manager


def test_a_finished_build_reaches_its_downstream_with_working_links_and_a_status_key(tmp_path):
    require_redis()
    with (
        Stack(tmp_path, REDIS_URL, FAST_RETRIES) as stack,
        Receiver(Answer(500, b"not yet"), Answer(200)) as flaky,
        Receiver(Answer(410)) as gone,
    ):
        stack.start()
        manager, builder = stack_keys(stack)
        client = Client(stack)
        subscription = client.subscribe(manager, flaky.url)
        gone_subscription = client.subscribe(manager, gone.url)
        build = client.build(builder)
        client.upload_and_finish(build)

        first, second = flaky.wait_for(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        payload = Webhook(subscription["signing_secret"]).verify(second.body, second.headers)
        assert payload["type"] == "build.succeeded"
        data = payload["data"]
        assert data["build"]["id"] == build["id"] and data["build"]["state"] == "succeeded"
        (artifact,) = data["artifacts"]
        assert artifact["path"] == "dist/app.txt"
        assert artifact["sha256"] == hashlib.sha256(ARTIFACT).hexdigest()
        # The links are the credential: plain HTTP, no header.
        assert requests.get(artifact["url"], timeout=30).content == ARTIFACT
        listing = requests.get(
            data["listing_url"], headers={"Accept": "application/json"}, timeout=30
        )
        assert listing.status_code == 200
        assert [a["path"] for a in listing.json()["artifacts"]] == ["dist/app.txt"]

        status_token = data["status_token"]
        statuses = f"/api/v1/builds/{build['id']}/statuses/"
        client.call(
            "POST", statuses, status_token, 201, json={"context": "down/tests", "state": "success"}
        )
        for method, path in [
            ("GET", statuses),
            ("GET", f"/api/v1/builds/{build['id']}/"),
            ("GET", f"/api/v1/builds/{build['id']}/artifacts/dist/app.txt"),
            ("PUT", f"/api/v1/builds/{build['id']}/artifacts/x.txt"),
            ("POST", f"/api/v1/builds/{build['id']}/finish"),
            ("POST", "/api/v1/keys/"),
        ]:
            assert client.call(method, path, status_token).status_code == 403, (method, path)
        shown = client.call("GET", statuses, build["key"]["token"], 200).json()["results"]
        assert [(s["context"], s["state"]) for s in shown] == [("down/tests", "success")]

        (delivery,) = wait_until(
            lambda: [
                d
                for d in client.deliveries(manager, subscription["id"])
                if d["state"] == "delivered"
            ],
            what="delivered state",
        )
        assert [a["status_code"] for a in delivery["attempts"]] == [200, 500]
        gone.wait_for(1)
        path = f"/api/v1/projects/app/webhooks/{gone_subscription['id']}/"
        disabled = wait_until(
            lambda: not client.call("GET", path, manager, 200).json()["active"],
            what="410 disables",
        )
        assert disabled and len(gone.received) == 1


def start_redis(port: int, data_dir) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc


def test_builds_finishing_while_the_broker_is_down_are_all_delivered_after_it_returns(tmp_path):
    """Our own redis-server on a free port, stopped and restarted (never the shared one)."""
    port = free_port()
    redis = start_redis(port, tmp_path)
    broker = f"redis://127.0.0.1:{port}/0"
    try:
        with Stack(tmp_path, broker, FAST_RETRIES) as stack, Receiver() as receiver:
            stack.start()
            manager, builder = stack_keys(stack)
            client = Client(stack)
            client.subscribe(manager, receiver.url)
            builds = [client.build(builder) for _ in range(3)]
            stop(redis)
            for build in builds:
                client.upload_and_finish(build)  # the finish succeeds: the outbox holds them
            time.sleep(2)
            assert receiver.received == []
            redis = start_redis(port, tmp_path)
            wait_for_builds(stack, receiver, builds)
            time.sleep(3)  # anything extra would arrive now
            ids = {r.headers["webhook-id"] for r in receiver.received}
            assert len(ids) == 3 == len(receiver.received)
    finally:
        stop(redis)


def test_the_broker_going_away_while_a_task_holds_its_message_does_not_end_the_worker(tmp_path):
    """A delivery in flight (its message taken, acknowledged only once it is done) when the
    broker goes: the worker reconnects when it is back and goes on delivering."""
    port = free_port()
    redis = start_redis(port, tmp_path)
    release = threading.Event()
    try:
        with (
            Stack(tmp_path, f"redis://127.0.0.1:{port}/0", FAST_RETRIES) as stack,
            Receiver(Answer(200, hang=release), Answer(200)) as receiver,
        ):
            stack.start()
            manager, builder = stack_keys(stack)
            client = Client(stack)
            client.subscribe(manager, receiver.url)
            first, second = client.build(builder), client.build(builder)
            client.upload_and_finish(first)
            receiver.wait_for(1)  # the worker is inside the send: its message is not acked yet
            stop(redis)
            release.set()  # the send ends, and its message is acked, with the broker away
            client.upload_and_finish(second)
            redis = start_redis(port, tmp_path)
            wait_for_builds(stack, receiver, [first, second])
            assert stack.worker.poll() is None
    finally:
        stop(redis)


def test_a_worker_killed_mid_delivery_does_not_lose_it(tmp_path):
    require_redis()
    release = threading.Event()
    with (
        Stack(tmp_path, REDIS_URL, FAST_RETRIES) as stack,
        Receiver(Answer(200, hang=release), Answer(200)) as receiver,
    ):
        stack.start()
        manager, builder = stack_keys(stack)
        client = Client(stack)
        subscription = client.subscribe(manager, receiver.url)
        build = client.build(builder)
        client.upload_and_finish(build)
        receiver.wait_for(1)  # the worker is inside the send now
        stack.kill_worker()
        release.set()
        stack.start_worker()
        first, second = receiver.wait_for(2, timeout=90)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        (delivery,) = wait_until(
            lambda: [
                d
                for d in client.deliveries(manager, subscription["id"])
                if d["state"] == "delivered"
            ],
            what="delivered state",
        )
        assert delivery["attempts"][0]["status_code"] == 200
