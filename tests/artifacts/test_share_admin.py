"""Shares in the admin: listed under their build, withdrawn with an action."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from artifacts.models import Share
from tokens.models import AuditEvent

from .conftest import upload
from .test_share_http import fetch, share

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client():
    user = get_user_model().objects.create_user(
        username="admin", password="a long enough password 1", is_staff=True, is_superuser=True
    )
    client = Client()
    client.force_login(user)
    return client


def test_shares_show_under_their_build_and_revoke_from_the_admin(api, build, staff_client):
    upload(api, build.token, build.build.pk, "dist/app.bin", b"bytes")
    body = share(api, build.token, build.build.pk, paths=["dist/app.bin"], expires_in=600).json()
    page = staff_client.get(f"/admin/builds/build/{build.build.pk}/change/")
    assert page.status_code == 200
    assert b"dist/app.bin" in page.content and b"live" in page.content
    listing = staff_client.get("/admin/artifacts/share/")
    assert listing.status_code == 200 and b"dist/app.bin" in listing.content
    shared = Share.objects.get()
    answer = staff_client.post(
        "/admin/artifacts/share/",
        {"action": "revoke_shares", "_selected_action": [shared.pk]},
        follow=True,
    )
    assert b"Revoked 1 share" in answer.content
    assert fetch(body["artifacts"][0]["url"]).json()["code"] == "key_revoked"
    assert AuditEvent.objects.filter(action="revoke", actor="user:admin").exists()
    assert b"key revoked" in staff_client.get("/admin/artifacts/share/").content
