"""The payload's links and keys: minted fresh for every attempt under one read-only key per
subscription and build, revocable alone; a status token that can only report a status."""

import hashlib
import json
import time

import pytest

from devtools.receivers import Answer, Receiver
from tokens.models import ApiKey
from webhooks.models import Delivery
from webhooks.services import delivery_attempt

from .conftest import attempt_all, subscribe

pytestmark = pytest.mark.django_db

APP = b"app bytes\n" * 50
DOCS = b"docs bytes\n"


def upload(api, build, path, body):
    url = f"/api/v1/builds/{build.build.pk}/artifacts/{path}"
    response = api.as_key(build.token).put(url, body, content_type="application/octet-stream")
    assert response.status_code == 201, response.content


def finish(api, build):
    url = f"/api/v1/builds/{build.build.pk}/finish"
    assert api.as_key(build.token).post(url, {"state": "succeeded"}, "json").status_code == 200


def get(client, url, **headers):
    return client.get(url.removeprefix("http://testserver"), **headers)


def payloads(receiver) -> list[dict]:
    return [json.loads(r.body)["data"] for r in receiver.received]


@pytest.fixture
def finished(api, build, manager_token):
    upload(api, build, "dist/app.txt", APP)
    upload(api, build, "docs/index.html", DOCS)
    return build


def test_payload_carries_the_build_links_and_a_status_token(api, client, build, manager_token):
    with Receiver() as receiver:
        subscribe(api, manager_token, receiver.url)
        upload(api, build, "dist/app.txt", APP)
        finish(api, build)
        attempt_all()
    (data,) = payloads(receiver)
    assert data["project"] == "app"
    assert data["build"]["id"] == build.build.pk and data["build"]["state"] == "succeeded"
    assert data["build"]["url"] == f"http://testserver/api/v1/builds/{build.build.pk}/"
    assert data["status_url"] == f"http://testserver/api/v1/builds/{build.build.pk}/statuses/"
    (artifact,) = data["artifacts"]
    assert artifact["size"] == len(APP) and artifact["sha256"] == hashlib.sha256(APP).hexdigest()
    downloaded = get(client, artifact["url"])
    assert downloaded.status_code == 200
    assert b"".join(downloaded.streaming_content) == APP
    listing = get(client, data["listing_url"], HTTP_ACCEPT="application/json")
    assert listing.status_code == 200
    status = api.as_key(data["status_token"]).get("/api/v1/keys/self").json()
    assert status["scopes"] == ["build:status"] and status["build"] == build.build.pk


def test_a_retry_after_the_links_expired_carries_new_working_links(
    api, client, finished, manager_token, settings
):
    settings.WEBHOOK_LINK_EXPIRES_SECONDS = 1
    with Receiver(Answer(500), Answer(200)) as receiver:
        subscribe(api, manager_token, receiver.url)
        finish(api, finished)
        delivery = Delivery.objects.get()
        delivery_attempt(delivery_id=delivery.pk)
        time.sleep(2.1)  # the first attempt's links are now expired
        settings.WEBHOOK_LINK_EXPIRES_SECONDS = 3600  # the new ones stay valid while we look
        delivery_attempt(delivery_id=delivery.pk)
    first, second = payloads(receiver)
    assert first["links_expire_at"] < second["links_expire_at"]
    assert first["status_token"] == second["status_token"]  # the same key, re-derived
    old = {a["path"]: a["url"] for a in first["artifacts"]}
    new = {a["path"]: a["url"] for a in second["artifacts"]}
    assert old.keys() == new.keys() == {"dist/app.txt", "docs/index.html"}
    assert get(client, old["dist/app.txt"]).status_code == 403
    fresh = get(client, new["dist/app.txt"])
    assert fresh.status_code == 200 and b"".join(fresh.streaming_content) == APP


def test_each_downstream_has_its_own_key_and_loses_access_alone(
    api, client, finished, manager_token
):
    with Receiver() as one, Receiver() as two:
        first = subscribe(api, manager_token, one.url).json()
        subscribe(api, manager_token, two.url)
        finish(api, finished)
        attempt_all()
    (data_one,), (data_two,) = payloads(one), payloads(two)
    read_keys = set(Delivery.objects.values_list("read_key", flat=True))
    assert len(read_keys) == 2
    for key in ApiKey.objects.filter(pk__in=read_keys):
        assert key.scopes == ["artifacts:read"] and key.build_id == finished.build.pk
    url = f"/api/v1/projects/app/webhooks/{first['id']}/"
    assert api.as_key(manager_token).delete(url).status_code == 204
    assert get(client, data_one["artifacts"][0]["url"]).status_code == 403
    assert api.as_key(data_one["status_token"]).get("/api/v1/keys/self").status_code == 401
    assert get(client, data_two["artifacts"][0]["url"]).status_code == 200


def test_untrusted_build_opted_in_still_gets_links(api, client, project, manager_token):
    from devtools.factories import make_build

    type(project).objects.filter(pk=project.pk).update(untrusted_webhooks=True)
    untrusted = make_build(project, trusted=False)
    with Receiver() as receiver:
        subscribe(api, manager_token, receiver.url)
        upload(api, untrusted, "dist/app.txt", APP)
        finish(api, untrusted)
        attempt_all()
    (data,) = payloads(receiver)
    assert get(client, data["artifacts"][0]["url"]).status_code == 200


@pytest.mark.parametrize("limit", [1, 2])
def test_a_payload_lists_at_most_its_limit_and_says_when_the_listing_holds_more(
    api, client, finished, manager_token, settings, limit
):
    settings.WEBHOOK_PAYLOAD_MAX_ARTIFACTS = limit
    settings.SHARE_LISTING_PAGE_SIZE = 1
    with Receiver() as receiver:
        subscribe(api, manager_token, receiver.url)
        finish(api, finished)
        attempt_all()
    (data,) = payloads(receiver)
    assert [a["path"] for a in data["artifacts"]] == ["dist/app.txt", "docs/index.html"][:limit]
    assert data["artifacts_truncated"] is (limit == 1)
    # The listing has every file, a page at a time.
    url, listed = data["listing_url"], []
    while url:
        page = get(client, url, HTTP_ACCEPT="application/json").json()
        listed += [a["path"] for a in page["artifacts"]]
        url = page["next"]
    assert listed == ["dist/app.txt", "docs/index.html"]
