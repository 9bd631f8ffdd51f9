import pytest
from django.contrib.auth import get_user_model

from devtools.factories import make_project, make_project_key
from tokens.scopes import Scope
from webhooks import crypto
from webhooks.models import Subscription

from .conftest import subscribe

pytestmark = pytest.mark.django_db

SIGV4 = {
    "access_key_id": "AKIDEXAMPLE",
    "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "region": "eu-west-1",
    "service": "lambda",
}


def test_subscription_is_created_with_a_signing_secret_shown_once(api, manager_token):
    response = subscribe(
        api,
        manager_token,
        "https://ci.example/hook",
        events=["build.succeeded", "build.failed"],
        basic_auth={"username": "ci", "password": "hunter2-long-password"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["signing_secret"].startswith("whsec_")
    assert body["basic_auth"] == {"username": "ci"}
    listing = api.as_key(manager_token).get("/api/v1/projects/app/webhooks/")
    detail = api.as_key(manager_token).get(f"/api/v1/projects/app/webhooks/{body['id']}/")
    for shown in (listing.content, detail.content):
        assert b"whsec_" not in shown and b"hunter2" not in shown
    assert listing.json()["count"] == 1
    assert detail.json()["events"] == ["build.failed", "build.succeeded"]


def test_secrets_are_encrypted_at_rest(api, manager_token):
    body = subscribe(
        api,
        manager_token,
        "https+sigv4://abc.lambda-url.eu-west-1.on.aws/",
        sigv4=SIGV4,
    ).json()
    row = Subscription.objects.get(pk=body["id"])
    stored = " ".join(
        [row.secret_encrypted, row.sigv4_secret_encrypted, row.basic_auth_password_encrypted]
    )
    assert body["signing_secret"] not in stored
    assert SIGV4["secret_access_key"] not in stored
    assert crypto.decrypt(row.secret_encrypted) == body["signing_secret"]
    public = {"access_key_id": "AKIDEXAMPLE", "region": "eu-west-1", "service": "lambda"}
    assert body["sigv4"] == public


def test_encryption_keys_rotate(settings):
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.WEBHOOK_ENCRYPTION_KEYS = [old]
    token = crypto.encrypt("whsec_dGVzdA==")
    settings.WEBHOOK_ENCRYPTION_KEYS = [new, old]
    assert crypto.decrypt(token) == "whsec_dGVzdA=="  # old ciphertexts still read
    rotated = crypto.reencrypt(token)
    settings.WEBHOOK_ENCRYPTION_KEYS = [new]
    assert crypto.decrypt(rotated) == "whsec_dGVzdA=="


@pytest.mark.parametrize(
    "url, code",
    [
        ("https://user:pass@ci.example/hook", "credentials_in_url"),
        ("https://user@ci.example/hook", "credentials_in_url"),
        ("https://ci.example/hook?token=abc", "credentials_in_url"),
        ("https://ci.example/hook?api_key=abc", "credentials_in_url"),
        ("https://ci.example/hook?X-Amz-Signature=abc", "credentials_in_url"),
        ("https://ci.example/hook?access_token=abc", "credentials_in_url"),
        ("ftp://ci.example/hook", "invalid_url"),
        ("javascript:alert(1)", "invalid_url"),
        ("https:///nohost", "invalid_url"),
        ("https://ci.example/hook#frag", "invalid_url"),
        ("https://ci.example/ho ok", "invalid_url"),
        ("https://ci.example:99999/hook", "invalid_url"),
        ("https://ci.example/\u0000", "null_characters_not_allowed"),
        ("https://ci.example/" + "a" * 2100, "max_length"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_400(api, manager_token, url, code):
    response = subscribe(api, manager_token, url)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == code
    assert not Subscription.objects.exists()


def test_plain_http_needs_the_setting(api, manager_token, settings):
    settings.WEBHOOK_ALLOW_HTTP = False
    response = subscribe(api, manager_token, "http://ci.example/hook")
    assert response.status_code == 400
    assert response.json()["code"] == "https_required"


@pytest.mark.parametrize(
    "extra, url",
    [
        ({}, "https+sigv4://abc.lambda-url.eu-west-1.on.aws/"),
        ({"sigv4": SIGV4}, "https://ci.example/hook"),
        (
            {"sigv4": SIGV4, "basic_auth": {"username": "u", "password": "p"}},
            "https+sigv4://abc.lambda-url.eu-west-1.on.aws/",
        ),
        ({"basic_auth": {"username": "a:b", "password": "p"}}, "https://ci.example/hook"),
        ({"sigv4": {**SIGV4, "region": "EU WEST"}}, "https+sigv4://x.on.aws/"),
    ],
)
def test_credentials_must_fit_the_scheme(api, manager_token, extra, url):
    response = subscribe(api, manager_token, url, **extra)
    assert response.status_code == 400, response.content
    assert not Subscription.objects.exists()


@pytest.mark.parametrize(
    "events", [[], ["build.exploded"], "build.succeeded", [1], ["build.succeeded"] * 11]
)
def test_events_are_validated(api, manager_token, events):
    response = api.as_key(manager_token).post(
        "/api/v1/projects/app/webhooks/", {"url": "https://ci.example/h", "events": events}, "json"
    )
    assert response.status_code == 400


def test_rotate_secret_returns_a_new_secret_once(api, manager_token):
    created = subscribe(api, manager_token, "https://ci.example/hook").json()
    url = f"/api/v1/projects/app/webhooks/{created['id']}/rotate-secret"
    response = api.as_key(manager_token).post(url)
    assert response.status_code == 201
    rotated = response.json()
    assert rotated["signing_secret"].startswith("whsec_")
    assert rotated["signing_secret"] != created["signing_secret"]
    assert rotated["previous_secret_expires_at"]


def test_delete_removes_the_subscription(api, manager_token):
    created = subscribe(api, manager_token, "https://ci.example/hook").json()
    url = f"/api/v1/projects/app/webhooks/{created['id']}/"
    assert api.as_key(manager_token).delete(url).status_code == 204
    assert api.as_key(manager_token).get(url).status_code == 404


def test_another_projects_manager_sees_nothing(api, manager_token):
    created = subscribe(api, manager_token, "https://ci.example/hook").json()
    make_project(slug="other")
    other = make_project_key(
        Subscription.objects.get().project.__class__.objects.get(slug="other"),
        scopes=(Scope.WEBHOOKS_MANAGE,),
    )
    client = api.as_key(other)
    assert client.get(f"/api/v1/projects/app/webhooks/{created['id']}/").status_code == 404
    assert client.get("/api/v1/projects/app/webhooks/").status_code == 404


def test_staff_creates_subscriptions_in_the_admin_and_sees_the_secret_once(client, project):
    user = get_user_model().objects.create_superuser("admin", "a@example.com", "pw-long-enough-1")
    client.force_login(user)
    response = client.post(
        "/admin/webhooks/subscription/add/",
        {
            "project": project.pk,
            "url": "https://ci.example/hook",
            "events": ["build.succeeded"],
            "basic_auth_username": "ci",
            "basic_auth_password": "hunter2-long-password",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert b"whsec_" in response.content  # the message, once
    subscription = Subscription.objects.get()
    page = client.get(f"/admin/webhooks/subscription/{subscription.pk}/change/")
    assert page.status_code == 200
    assert b"whsec_" not in page.content and b"hunter2" not in page.content
    refused = client.post(
        "/admin/webhooks/subscription/add/",
        {"project": project.pk, "url": "https://u:p@ci.example/", "events": ["ping"]},
    )
    assert b"Credentials in the URL" in refused.content
    assert Subscription.objects.count() == 1


def test_international_domain_names_are_sent_as_idna_and_non_ascii_paths_refused(
    api, manager_token
):
    from webhooks.transport import url_parse

    assert url_parse("https://bücher.example/hook").host == "xn--bcher-kva.example"
    assert subscribe(api, manager_token, "https://bücher.example/hook").status_code == 201
    response = subscribe(api, manager_token, "https://ci.example/häk")
    assert response.status_code == 400
