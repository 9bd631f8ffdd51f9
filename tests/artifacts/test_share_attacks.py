"""Sharing attacked from outside: links reused for other paths, listings wider than the share,
hostile share bodies, the admin's revoke action without the permission."""

from datetime import timedelta
from urllib.parse import quote, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from artifacts.models import Share
from artifacts.sharing import share_links
from builds.models import StatusCheck
from tokens.models import ApiKey
from tokens.services import key_derive

from .conftest import upload
from .test_share_http import FILES, fetch, share

pytestmark = pytest.mark.django_db


@pytest.fixture
def stocked(api, build):
    for path, data in FILES.items():
        assert upload(api, build.token, build.build.pk, path, data).status_code == 201
    return build


def _swap_path(url: str, new_path: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=new_path).geturl()


@pytest.mark.parametrize(
    "variant",
    [
        lambda p: p.replace("/dist/", "/dist//"),
        lambda p: p.replace("/dist/", "/dist/./"),
        lambda p: p.replace("/dist/", "/dist/../dist/"),
        lambda p: p.replace("/dist/", "/dist%2F"),
        lambda p: p.replace("/dist/", "/DIST/"),
        lambda p: p + "/",
        lambda p: p.replace("/app", "/%61pp"),
    ],
    ids=["double-slash", "dot", "dotdot", "pct-slash", "case", "trailing-slash", "pct-letter"],
)
def test_a_link_never_opens_another_path_through_another_spelling(api, stocked, variant):
    body = share(api, stocked.token, stocked.build.pk, paths=["dist/app.tar.gz"], expires_in=60)
    url = body.json()["artifacts"][0]["url"]
    path = urlsplit(url).path
    response = fetch(_swap_path(url, variant(path)))
    # The same artifact through an equivalent spelling is fine; anything else is refused.
    if response.status_code == 200:
        assert response.body == FILES["dist/app.tar.gz"]
    else:
        assert response.status_code == 403


def test_an_artifact_link_does_not_open_a_listing(api, stocked):
    url = share(api, stocked.token, stocked.build.pk, paths=["dist/app.tar.gz"], expires_in=60)
    url = url.json()["artifacts"][0]["url"]
    parts = urlsplit(url)
    for path in [f"/dl/builds/{stocked.build.pk}/", f"/dl/builds/{stocked.build.pk}/dist/"]:
        response = fetch(parts._replace(path=path).geturl(), HTTP_ACCEPT="application/json")
        assert response.status_code == 403


def test_unicode_spellings_of_a_path_open_only_what_was_shared(api, stocked):
    name = "caf\u00e9.txt"  # NFC: uploads refuse NFD
    assert upload(api, stocked.token, stocked.build.pk, f"u/{name}", b"cafe").status_code == 201
    links = share(api, stocked.token, stocked.build.pk, prefix="u/", expires_in=60).json()
    [item] = links["artifacts"]
    assert fetch(item["url"]).body == b"cafe"
    other = "cafe\u0301.txt" if name == "caf\u00e9.txt" else "caf\u00e9.txt"
    url = _swap_path(item["url"], f"/dl/builds/{stocked.build.pk}/u/{quote(other)}")
    response = fetch(url)
    assert response.status_code in (200, 403)
    if response.status_code == 200:
        assert response.body == b"cafe"


def _links(key, build, **scope):
    return share_links(
        key=key,
        build=build,
        expires_at=timezone.now() + timedelta(minutes=5),
        base_url="http://testserver",
        **scope,
    )


def _listed(links) -> list[str]:
    listing = fetch(links.url, HTTP_ACCEPT="application/json")
    return [a["path"] for a in listing.json()["artifacts"]]


@pytest.mark.parametrize(
    "scope", [{"paths": ["logs/build.log"]}, {"prefix": "dist/app"}], ids=["paths", "name-prefix"]
)
def test_links_never_come_with_a_listing_wider_than_themselves(stocked, scope):
    """share_links under a key that sees more than it is asked to link (and has no Share row
    recording the narrower scope): a listing signed here would show everything the key sees,
    so none is signed."""
    key, _ = key_derive(parent=stocked.key)
    with pytest.raises(ValueError, match="listing"):
        _links(key, stocked.build, **scope)


def test_links_for_a_name_prefix_list_it_under_a_key_as_narrow(stocked):
    key, _ = key_derive(parent=stocked.key, path_prefix="dist/")
    links = _links(key, stocked.build, prefix="dist")
    assert [a["path"] for a in links.artifacts] == _listed(links)
    assert _listed(links) == ["dist/app.tar.gz", "dist/lib.so"]


def test_links_under_a_shares_key_list_the_shares_paths(api, stocked):
    body = share(api, stocked.token, stocked.build.pk, paths=["logs/build.log"], expires_in=60)
    key = ApiKey.objects.get(pk=body.json()["key_id"])
    links = _links(key, stocked.build, paths=["logs/build.log"])
    assert [a["path"] for a in links.artifacts] == _listed(links) == ["logs/build.log"]
    with pytest.raises(ValueError):
        _links(key, stocked.build, paths=["dist/lib.so"])


@pytest.mark.parametrize(
    "body",
    [
        {"paths": [["dist/app.tar.gz"]]},
        {"paths": [{"a": 1}]},
        {"paths": [None]},
        {"paths": []},
        {"paths": ["dist/app.tar.gz"] * 5000},
        {"paths": [f"x/{i}" for i in range(1001)]},
        {"prefix": ["dist/"]},
        {"prefix": {"a": "b"}},
        {"expires_in": 10**400},
        {"expires_in": -1},
        {"expires_in": 1.5},
        {"expires_in": True},
        {"paths": ["dist/app.tar.gz"], "prefix": "logs/"},
        {"paths": ["dist/\u202egz.rat.app"]},
    ],
)
def test_hostile_share_bodies_are_400_and_mint_nothing(api, stocked, body):
    before = ApiKey.objects.count(), Share.objects.count()
    response = share(api, stocked.token, stocked.build.pk, **body)
    assert response.status_code in (400, 403), response.content
    assert response.json()["code"]
    assert (ApiKey.objects.count(), Share.objects.count()) == before


def test_too_many_paths_are_refused_by_count_before_any_path_is_checked(api, stocked, settings):
    """A huge list is refused on its length alone: its items (one of them not even a string)
    are never validated one by one."""
    paths = [["not a string"]] + ["dist/app.tar.gz"] * settings.SHARE_MAX_PATHS
    response = share(api, stocked.token, stocked.build.pk, paths=paths)
    assert response.status_code == 400
    assert "At most" in response.json()["detail"], response.json()


def test_a_deeply_nested_share_body_is_400(api, stocked):
    nested = "[" * 100000 + "]" * 100000
    response = api.as_key(stocked.token).post(
        f"/api/v1/builds/{stocked.build.pk}/share",
        data=f'{{"paths": {nested}}}',
        content_type="application/json",
    )
    assert response.status_code == 400


def test_share_page_escapes_hostile_build_fields_and_paths(api, project):
    from devtools.factories import make_build

    hostile = make_build(project, ref='refs/heads/"><script>alert(1)</script>')
    name = "x/<img src=x onerror=alert(1)>.txt"
    assert upload(api, hostile.token, hostile.build.pk, name, b"x").status_code == 201
    body = share(api, hostile.token, hostile.build.pk, expires_in=60).json()
    StatusCheck.objects.create(
        build=hostile.build,
        context="<b>ctx</b>",
        state="success",
        description="<script>alert(2)</script>",
        target_url="javascript:alert(3)",
    )
    page = fetch(body["url"], HTTP_ACCEPT="text/html").body.decode()
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "javascript:" not in page
    assert "&lt;script&gt;alert(2)" in page  # shown, as text


def test_an_untrusted_build_cannot_share_another_build(api, project, stocked):
    from devtools.factories import make_build

    untrusted = make_build(project, trusted=False)
    response = share(api, untrusted.token, stocked.build.pk, expires_in=60)
    assert response.status_code == 404
    assert not Share.objects.exists()


def test_a_deploy_token_cannot_share_a_build_outside_its_ref_pattern(api):
    from devtools.factories import make_build, make_project
    from tokens.services import deploy_token_current

    project = make_project(slug="cd3", deploy_tokens_enabled=True)
    branch = make_build(project, ref="refs/heads/feature")
    upload(api, branch.token, branch.build.pk, "a.txt", b"feature")
    deploy, token = deploy_token_current(project=project)
    ApiKey.objects.filter(pk=deploy.pk).update(ref_pattern="refs/heads/main")
    response = share(api, token, branch.build.pk, expires_in=60)
    assert response.status_code == 404
    assert not Share.objects.exists()


@pytest.fixture
def viewer_client():
    user = get_user_model().objects.create_user(
        username="viewer", password="a long enough password 1", is_staff=True
    )
    user.user_permissions.add(Permission.objects.get(codename="view_share"))
    client = Client()
    client.force_login(user)
    return client


def test_a_staff_user_who_may_only_view_shares_cannot_revoke_them(api, build, viewer_client):
    upload(api, build.token, build.build.pk, "dist/app.bin", b"bytes")
    body = share(api, build.token, build.build.pk, expires_in=600).json()
    shared = Share.objects.get()
    assert viewer_client.get("/admin/artifacts/share/").status_code == 200
    viewer_client.post(
        "/admin/artifacts/share/",
        {"action": "revoke_shares", "_selected_action": [shared.pk]},
        follow=True,
    )
    assert fetch(body["artifacts"][0]["url"]).status_code == 200
    assert ApiKey.objects.get(pk=body["key_id"]).revoked_at is None


def test_a_staff_user_without_share_permissions_sees_no_shares(build, api):
    user = get_user_model().objects.create_user(
        username="other", password="a long enough password 1", is_staff=True
    )
    client = Client()
    client.force_login(user)
    assert client.get("/admin/artifacts/share/").status_code == 403


@pytest.mark.parametrize("baseline", [False, True], ids=["reference", "benchmark"])
def test_the_reference_nginx_serves_no_blob_without_a_link(tmp_path, baseline):
    """Only the benchmark's nginx serves the artifact root straight from disk; the reference
    configuration reaches a blob only through the app's X-Accel-Redirect (internal)."""
    import urllib.error
    import urllib.request

    from devtools.nginx import Nginx
    from devtools.servers import free_port

    root = tmp_path / "artifacts"
    (root / "blobs" / "ab").mkdir(parents=True)
    (root / "blobs" / "ab" / "blob.1").write_bytes(b"private bytes")
    nginx = Nginx(tmp_path / "nginx", free_port(), root, baseline=baseline)
    try:
        for path in ["/static-baseline/blobs/ab/blob.1", "/_artifacts/blobs/ab/blob.1"]:
            try:
                with urllib.request.urlopen(nginx.url + path, timeout=10) as answer:
                    served = answer.read()
            except urllib.error.HTTPError as refused:
                served = refused.read()
            expected = baseline and path.startswith("/static-baseline/")
            assert (served == b"private bytes") == expected, path
    finally:
        nginx.stop()


def test_a_build_has_a_bounded_number_of_live_shares(api, stocked, settings):
    settings.SHARE_MAX_LIVE_PER_BUILD = 2
    first = share(api, stocked.token, stocked.build.pk, expires_in=60)
    assert share(api, stocked.token, stocked.build.pk, expires_in=60).status_code == 201
    keys = ApiKey.objects.count()
    refused = share(api, stocked.token, stocked.build.pk, expires_in=60)
    assert refused.status_code == 409 and refused.json()["code"] == "too_many_shares"
    assert ApiKey.objects.count() == keys and Share.objects.count() == 2
    api.as_key(stocked.token).delete(f"/api/v1/keys/{first.json()['key_id']}")
    assert share(api, stocked.token, stocked.build.pk, expires_in=60).status_code == 201
