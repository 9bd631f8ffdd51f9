"""One path policy (docs/api.md, "Artifact paths") everywhere a path or prefix is accepted:
artifact PUT and GET, ``?prefix=``, a derived key's ``path_prefix``."""

from urllib.parse import quote

import pytest

from artifacts.models import Artifact
from tokens.models import ApiKey

from .conftest import artifact_url, upload

pytestmark = pytest.mark.django_db

# Each looks like (or renders as) another, valid path.
LOOKALIKES = {
    "nbsp": "dist/app\u00a0x.tar",
    "hangul filler": "dist/\u3164/app.tar",
    "zero width space": "dist/app\u200b.tar",
    "variation selector": "dist/app\ufe0f.tar",
    "soft hyphen": "dist/app\u00ad.tar",
    "private use": "dist/\ue000.tar",
    "noncharacter": "dist/app\ufdd0.tar",
    "noncharacter plane 1": "dist/app\U0001fffe.tar",
    "unassigned": "dist/app\U000e0fff.tar",
    "line separator": "dist/a\u2028b",
    "trailing dot": "dist/app.",
    "trailing dot in a directory": "dist./app.tar",
    "trailing space": "dist/app ",
    "trailing space in a directory": "dist /app.tar",
    "leading space": "dist/ app.tar",
    "leading combining mark": "dist/\u0301app.tar",
    "leading combining mark in the path": "\u0301dist/app.tar",
    "decomposed (NFD)": "dist/cafe\u0301.tar",
    "bidi override": "dist/\u202egpj.exe",
    "ideographic space": "dist/app\u3000.tar",
}
ACCEPTED = [
    "dist/app-1.0.tar.gz",
    "dist/caf\u00e9.tar",  # NFC
    "docs/read me.txt",
    "日本語/ファイル.txt",
    "emoji/\U0001f680.bin",
    ".hidden/.env",
    "a/b.c/d",
]


def put(api, build, path: str):
    return upload(api, build.token, build.build.pk, quote(path.encode(), safe="/"), b"data")


@pytest.mark.parametrize("path", list(LOOKALIKES.values()), ids=list(LOOKALIKES))
def test_a_lookalike_path_is_refused_on_put_and_get(api, build, path):
    response = put(api, build, path)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_path"
    assert response.json()["detail"].startswith("The artifact path ")
    assert not Artifact.objects.exists()
    url = artifact_url(build.build.pk, quote(path.encode(), safe="/"))
    response = api.as_key(build.token).get(url)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_path"


@pytest.mark.parametrize("path", ACCEPTED)
def test_a_readable_path_is_stored_and_read_back(api, build, path):
    assert put(api, build, path).status_code == 201
    url = artifact_url(build.build.pk, quote(path.encode(), safe="/"))
    assert api.as_key(build.token).get(url).status_code == 200
    listing = api.as_key(build.token).get(artifact_url(build.build.pk), {"prefix": path[:-1]})
    assert [a["path"] for a in listing.json()["results"]] == [path]


@pytest.mark.parametrize("prefix", ["dist/app.", "dist/app ", "dist/", "dist/ca", ""])
def test_an_unfinished_last_segment_is_a_valid_prefix(api, build, prefix):
    response = api.as_key(build.token).get(artifact_url(build.build.pk), {"prefix": prefix})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "prefix",
    [p for name, p in LOOKALIKES.items() if "trailing" not in name or "directory" in name],
)
def test_a_lookalike_prefix_is_refused(api, build, prefix):
    response = api.as_key(build.token).get(artifact_url(build.build.pk), {"prefix": prefix})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_prefix"


@pytest.mark.parametrize(
    "prefix",
    [p.rsplit("/", 1)[0] + "/" if "directory" in n else p + "/" for n, p in LOOKALIKES.items()],
)
def test_a_lookalike_key_prefix_is_refused(api, build, prefix):
    keys = ApiKey.objects.count()
    response = api.as_key(build.token).post(
        "/api/v1/keys/", {"scopes": ["artifacts:read"], "path_prefix": prefix}, format="json"
    )
    assert response.status_code == 400, response.content
    assert "path_prefix" in response.json()["detail"] or "prefix" in response.json()["detail"]
    assert ApiKey.objects.count() == keys


@pytest.mark.parametrize(
    "target",
    [
        "a%FFb",  # not UTF-8 at all
        "a%C3",  # a truncated sequence
        "a%ED%A0%80",  # an encoded surrogate (CESU)
        "a%C0%AF",  # an overlong '/'
        "a%2541",  # "%41" itself, encoded: reads as "aA"
    ],
)
def test_a_path_that_is_not_utf8_is_400_and_nothing_is_stored(api, build, target):
    response = upload(api, build.token, build.build.pk, target, b"data")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_path"
    assert not Artifact.objects.exists()
    listing = api.as_key(build.token).get(f"{artifact_url(build.build.pk)}?prefix={target}")
    assert listing.status_code == 400
    assert listing.json()["code"] == "invalid_prefix"


def test_a_path_too_long_for_a_url_is_refused_before_anything_is_stored(api, build):
    """1024 characters are allowed, but not 1024 that take 9 bytes each in a URL: no GET could
    name that artifact (request lines end at 4094 bytes). 332 of them (2996 bytes) are fine."""
    fits = "dist/" + "/".join(["字" * 83] * 4)
    too_long = "dist/" + "/".join(["字" * 85] * 4)
    assert upload(api, build.token, build.build.pk, fits, b"x").status_code == 201
    refused = upload(api, build.token, build.build.pk, too_long, b"x")
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_path"
    assert "3000" in refused.json()["detail"]
    listed = api.as_key(build.token).get(
        f"/api/v1/builds/{build.build.pk}/artifacts/", {"prefix": too_long}
    )
    assert listed.status_code == 400 and listed.json()["code"] == "invalid_prefix"
