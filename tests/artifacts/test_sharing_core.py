"""share_links / share_create: the sharing core other features build on (webhook payloads)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from artifacts import signing
from artifacts.models import Share
from artifacts.sharing import share_create, share_links
from tokens.errors import KeyForbidden
from tokens.models import ApiKey, AuditEvent
from tokens.services import key_derive, key_revoke

from .conftest import upload

pytestmark = pytest.mark.django_db
BASE = "https://ac.example"


@pytest.fixture
def stocked(api, build):
    for path, data in [("dist/app.tar.gz", b"app"), ("dist/lib.so", b"lib"), ("logs/x.txt", b"x")]:
        assert upload(api, build.token, build.build.pk, path, data).status_code == 201
    return build


def test_share_links_signs_what_the_key_sees_under_the_existing_key(stocked):
    expires_at = timezone.now() + timedelta(minutes=5)
    links = share_links(
        key=stocked.key, build=stocked.build, prefix="dist/", expires_at=expires_at, base_url=BASE
    )
    assert [a["path"] for a in links.artifacts] == ["dist/app.tar.gz", "dist/lib.so"]
    assert links.url.startswith(f"{BASE}/dl/builds/{stocked.build.pk}/dist/?")
    now = timezone.now().timestamp()
    for url in [links.url, *(a["url"] for a in links.artifacts)]:
        assert signing.verify_url(url, now=now).kid == stocked.key.pk
    assert links.artifacts[0]["size"] == 3 and len(links.artifacts[0]["sha256"]) == 64
    assert ApiKey.objects.count() == 1  # nothing minted


def test_share_create_mints_a_read_only_key_bound_to_the_build_and_audits(stocked):
    share = share_create(
        key=stocked.key,
        build=stocked.build,
        paths=["dist/app.tar.gz"],
        expires_in=600,
        base_url=BASE,
    )
    key = share.key
    assert key.parent_id == stocked.key.pk and key.build_id == stocked.build.pk
    assert key.scopes == ["artifacts:read"]
    assert [a["path"] for a in share.links.artifacts] == ["dist/app.tar.gz"]
    assert signing.verify_url(share.links.url, now=timezone.now().timestamp()).kid == key.pk
    event = AuditEvent.objects.get(action=AuditEvent.Action.SHARE)
    assert event.key_id == key.pk and event.detail["shared_by"] == stocked.key.pk


def test_a_share_never_outlives_its_sharer(stocked):
    short, _ = key_derive(parent=stocked.key, expires_in=30)
    share = share_create(key=short, build=stocked.build, expires_in=3600, base_url=BASE)
    assert share.expires_at == short.expires_at


def test_a_prefix_limited_key_cannot_share_outside_its_prefix_and_is_audited(stocked):
    limited, _ = key_derive(parent=stocked.key, path_prefix="dist/")
    for outside in [{"paths": ["logs/x.txt"]}, {"prefix": "logs/"}]:
        with pytest.raises(KeyForbidden):
            share_create(key=limited, build=stocked.build, expires_in=60, base_url=BASE, **outside)
    assert AuditEvent.objects.filter(key=limited, action=AuditEvent.Action.DENIED).count() == 2
    assert not Share.objects.exists()
    whole = share_create(key=limited, build=stocked.build, expires_in=60, base_url=BASE)
    assert [a["path"] for a in whole.links.artifacts] == ["dist/app.tar.gz", "dist/lib.so"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"expires_in": 0},
        {"expires_in": 7 * 86400 + 1},
        {"expires_in": "60"},
        {"expires_in": 60, "paths": []},
        {"expires_in": 60, "paths": ["../etc/passwd"]},
        {"expires_in": 60, "paths": ["dist/missing"]},
        {"expires_in": 60, "paths": "dist/app.tar.gz"},
    ],
)
def test_bad_share_requests_create_nothing(stocked, kwargs):
    with pytest.raises(ValidationError):
        share_create(key=stocked.key, build=stocked.build, base_url=BASE, **kwargs)
    assert not Share.objects.exists()
    assert ApiKey.objects.count() == 1


def test_revoking_the_sharer_revokes_the_share_key(stocked):
    share = share_create(key=stocked.key, build=stocked.build, expires_in=60, base_url=BASE)
    key_revoke(key=stocked.key, reason="test", actor="system")
    share.key.refresh_from_db()
    assert share.key.is_revoked()
