"""A key limited to a path prefix reaches exactly that directory: no case folding, no
neighbouring directory that merely shares the first letters."""

import pytest

pytestmark = pytest.mark.django_db

FILES = ["dist/app.txt", "DIST/secret.txt", "Dist/other.txt", "dist-private/key.txt"]


@pytest.fixture
def uploaded(api, build):
    client = api.as_key(build.token)
    for path in FILES:
        response = client.put(
            f"/api/v1/builds/{build.build.pk}/artifacts/{path}",
            data=path.encode(),
            content_type="application/octet-stream",
        )
        assert response.status_code == 201, response.content
    return build


def derive_prefixed(api, token, prefix, scopes=("artifacts:read",)):
    response = api.as_key(token).post(
        "/api/v1/keys/",
        {"scopes": list(scopes), "expires_in": 600, "path_prefix": prefix},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.parametrize("prefix", ["dist/", "dist"])
def test_prefixed_key_lists_and_reads_only_its_directory(api, uploaded, prefix):
    key = derive_prefixed(api, uploaded.token, prefix)
    assert key["path_prefix"] == "dist/"
    client = api.as_key(key["token"])
    base = f"/api/v1/builds/{uploaded.build.pk}/artifacts/"
    listed = [a["path"] for a in client.get(base).json()["results"]]
    assert listed == ["dist/app.txt"]
    assert client.get(base + "dist/app.txt").status_code == 200
    for path in ["DIST/secret.txt", "Dist/other.txt", "dist-private/key.txt"]:
        assert client.get(base + path).status_code == 404, path


def test_listing_prefix_filter_is_case_sensitive(api, uploaded):
    base = f"/api/v1/builds/{uploaded.build.pk}/artifacts/"
    listed = api.as_key(uploaded.token).get(base + "?prefix=dist").json()["results"]
    assert sorted(a["path"] for a in listed) == ["dist-private/key.txt", "dist/app.txt"]


def test_prefixed_key_cannot_write_beside_its_directory(api, uploaded):
    key = derive_prefixed(api, uploaded.token, "dist", scopes=("artifacts:read", "artifacts:write"))
    client = api.as_key(key["token"])
    base = f"/api/v1/builds/{uploaded.build.pk}/artifacts/"
    for path in ["DIST/new.txt", "dist-private/new.txt"]:
        response = client.put(base + path, data=b"x", content_type="application/octet-stream")
        assert response.status_code == 403, path
    ok = client.put(base + "dist/new.txt", data=b"x", content_type="application/octet-stream")
    assert ok.status_code == 201


def test_a_narrower_prefix_cannot_escape_sideways(api, uploaded):
    dist = derive_prefixed(api, uploaded.token, "dist/", scopes=("artifacts:read", "keys:mint"))
    response = api.as_key(dist["token"]).post(
        "/api/v1/keys/",
        {"scopes": ["artifacts:read"], "expires_in": 60, "path_prefix": "dist-private"},
        format="json",
    )
    assert response.status_code == 403
