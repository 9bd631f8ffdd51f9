from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tokens import crypto
from tokens.models import ApiKey, AuditEvent, _digest_lookup
from tokens.services import deploy_token_current, key_revoke

pytestmark = pytest.mark.django_db


def corrupt_checksum(token: str) -> str:
    last = token[-1]
    return token[:-1] + ("A" if last != "A" else "B")


def test_bad_checksum_is_rejected_before_any_query(api, build, django_assert_num_queries):
    client = api.as_key(corrupt_checksum(build.token))
    with django_assert_num_queries(0):
        response = client.get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API token.", "code": "invalid_token"}


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer a b",
        "Bearer acb_short",
        "Bearer xyz_" + "a" * 38,
        "Bearer acq_" + "a" * 38,
        "Bearer " + "é" * 42,
        "Bearer acb_" + "!" * 38,
    ],
)
def test_malformed_credentials_are_401_without_a_query(
    api, build, header, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = api.get(f"/api/v1/builds/{build.build.pk}/", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401


def test_well_formed_unknown_token_is_401(api, build):
    response = api.as_key(crypto.token_generate("build")).get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


def test_expired_key_is_401(api, build):
    ApiKey.objects.filter(pk=build.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.as_key(build.token).get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 401
    assert response.json()["code"] == "expired"
    assert AuditEvent.objects.filter(key=build.key, action="denied", reason="expired").exists()


def test_revoked_key_is_401_on_the_next_request(api, build):
    client = api.as_key(build.token)
    assert client.get(f"/api/v1/builds/{build.build.pk}/").status_code == 200
    key_revoke(key=build.key, reason="test", actor="test")
    response = client.get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 401
    assert response.json()["code"] == "revoked"


def test_token_with_another_kinds_prefix_is_rejected(api, build):
    """A build token re-labelled as a project token does not authenticate (different digest)."""
    entropy = build.token[4:-6]
    forged = f"acp_{entropy}{build.token[-6:]}"
    assert api.as_key(forged).get("/api/v1/keys/self").status_code == 401


def test_token_is_stored_only_as_its_digest(build):
    table = ApiKey._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")
        rows = cursor.fetchall()
    dump = repr(rows)
    assert build.token not in dump
    assert build.token[4:-6] not in dump
    assert crypto.token_digest(build.token, pepper="x") not in dump  # pepper matters
    key = ApiKey.objects.get(pk=build.key.pk)
    assert crypto.token_verify(build.token, key.digest, pepper=settings.TOKEN_PEPPER)


def test_token_is_returned_exactly_once(api, project, project_token):
    created = (
        api.as_key(project_token)
        .post(
            "/api/v1/projects/app/builds/",
            {"ref": "refs/heads/main", "commit": "abc"},
            format="json",
        )
        .json()
    )
    token = created["key"]["token"]
    client = api.as_key(token)
    for url in [f"/api/v1/builds/{created['id']}/", "/api/v1/keys/self"]:
        assert token not in client.get(url).content.decode()


def test_keys_self_shows_the_effective_scopes(api, build):
    body = api.as_key(build.token).get("/api/v1/keys/self").json()
    assert body["kind"] == "build"
    assert body["build"] == build.build.pk
    assert body["project"] == "app"
    assert body["scopes"] == [
        "artifacts:read",
        "artifacts:write",
        "build:finish",
        "build:status",
        "keys:mint",
    ]
    assert body["state"] == "active"
    assert body["parent"] is None


def test_last_used_is_written_at_most_once_per_interval(api, build):
    client = api.as_key(build.token)
    client.get("/api/v1/keys/self")
    first = ApiKey.objects.get(pk=build.key.pk).last_used_at
    assert first is not None
    with CaptureQueriesContext(connection) as queries:
        client.get("/api/v1/keys/self")
    assert not [q for q in queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    assert ApiKey.objects.get(pk=build.key.pk).last_used_at == first


def observed_bits(tokens: list[str]) -> float:
    """Entropy the tokens show, measured on them (not on the module's constants): for every
    character position of the random part, log2 of how many symbols appear there."""
    import math

    randoms = [t[4:-6] for t in tokens]
    assert len({len(r) for r in randoms}) == 1
    assert len(set(randoms)) == len(randoms)
    return sum(math.log2(len({r[i] for r in randoms})) for i in range(len(randoms[0])))


@pytest.mark.parametrize("kind", ["project", "build", "derived", "deploy"])
def test_generated_tokens_round_trip_their_kind_and_carry_160_bits(kind):
    tokens = [crypto.token_generate(kind) for _ in range(3000)]
    assert {crypto.token_kind(t) for t in tokens} == {kind}
    # 3000 draws show all 62 symbols at a position with overwhelming probability; 160 bits
    # needs 27 positions of 62 symbols, so a shorter or narrower random part fails.
    assert observed_bits(tokens) >= 160


def test_re_derivable_deploy_tokens_carry_160_bits_too():
    tokens = [crypto.token_derive("deploy", secret="pepper", seed=f"{n:064x}") for n in range(3000)]
    assert {crypto.token_kind(t) for t in tokens} == {"deploy"}
    assert observed_bits(tokens) >= 160


def test_a_single_typo_is_caught_by_the_checksum():
    token = crypto.token_generate("build")
    typo = token[:10] + ("a" if token[10] != "a" else "b") + token[11:]
    with pytest.raises(crypto.InvalidToken):
        crypto.token_kind(typo)


@pytest.mark.parametrize("kind", ["build", "deploy"])
def test_a_request_costs_one_query_for_the_key_its_build_and_its_project(
    api, build, kind, django_assert_num_queries
):
    build.build.project.deploy_tokens_enabled = True
    build.build.project.save(update_fields=["deploy_tokens_enabled"])
    token = build.token if kind == "build" else deploy_token_current(project=build.build.project)[1]
    client = api.as_key(token)
    client.get("/api/v1/keys/self")  # records last use once
    with django_assert_num_queries(1):
        assert client.get("/api/v1/keys/self").status_code == 200


@pytest.mark.parametrize("reason", ["revoked", "expired"])
def test_a_dead_token_replayed_is_audited_once_per_interval(
    api, build, reason, settings, monkeypatch
):
    settings.KEY_LAST_USED_INTERVAL = 60
    if reason == "revoked":
        key_revoke(key=build.key, reason="test", actor="test")
    else:
        ApiKey.objects.filter(pk=build.key.pk).update(expires_at=timezone.now())
    client = api.as_key(build.token)
    for _ in range(20):
        assert client.get("/api/v1/keys/self").status_code == 401
    denied = AuditEvent.objects.filter(key=build.key, action="denied", reason=reason)
    assert denied.count() == 1

    moved = timezone.now() + timedelta(seconds=61)
    monkeypatch.setattr(timezone, "now", lambda: moved)
    for _ in range(5):
        client.get("/api/v1/keys/self")
    assert denied.count() == 2


def test_a_token_whose_parent_was_revoked_is_audited_once_per_interval(api, build):
    child = api.as_key(build.token).post(
        "/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json"
    )
    key_revoke(key=build.key, reason="test", actor="test")
    ApiKey.objects.filter(pk=child.json()["id"]).update(revoked_at=None)  # a revocation racing
    client = api.as_key(child.json()["token"])
    for _ in range(5):
        assert client.get("/api/v1/keys/self").status_code == 401
    assert AuditEvent.objects.filter(key_id=child.json()["id"], action="denied").count() == 1


def test_a_key_derived_five_deep_authenticates_in_one_query_with_its_ancestors_state(
    api, build, django_assert_num_queries
):
    from tokens.services import key_derive

    chain = [build.key]
    for _ in range(5):
        key, token = key_derive(parent=chain[-1], scopes=["artifacts:read", "keys:mint"])
        chain.append(key)
    client = api.as_key(token)
    client.get("/api/v1/keys/self")  # records last use once
    with django_assert_num_queries(1):
        assert client.get("/api/v1/keys/self").status_code == 200
    for ancestor in chain[1:-1]:
        ApiKey.objects.filter(pk=ancestor.pk).update(expires_at=timezone.now())
        response = client.get("/api/v1/keys/self")
        assert response.status_code == 401
        assert response.json()["code"] == "revoked"
        ApiKey.objects.filter(pk=ancestor.pk).update(expires_at=None)
    assert client.get("/api/v1/keys/self").status_code == 200


def test_a_download_with_a_build_key_costs_the_key_and_the_artifact(
    api, build, django_assert_num_queries
):
    """The build was loaded with the key: the view does not fetch it a second time."""
    client = api.as_key(build.token)
    url = f"/api/v1/builds/{build.build.pk}/artifacts/a.txt"
    assert client.put(url, b"abc", content_type="text/plain").status_code == 201
    client.get("/api/v1/keys/self")
    with django_assert_num_queries(2):
        response = client.get(url)
    assert response.status_code == 200
    assert client.get(f"/api/v1/builds/{build.build.pk + 1000}/artifacts/a.txt").status_code == 404


@pytest.mark.parametrize("kind", ["build", "deploy"])
def test_the_build_view_does_not_fetch_the_project_authentication_loaded(
    api, build, kind, django_assert_num_queries
):
    """The project came with the key, and a build's totals are its usage counters. A build key
    brought its build too: key (1) and statuses (1). A deploy token is project-wide: key (1), the
    build (1), its statuses (1)."""
    build.build.project.deploy_tokens_enabled = True
    build.build.project.save(update_fields=["deploy_tokens_enabled"])
    token = build.token if kind == "build" else deploy_token_current(project=build.build.project)[1]
    client = api.as_key(token)
    client.get("/api/v1/keys/self")
    with django_assert_num_queries(2 if kind == "build" else 3):
        response = client.get(f"/api/v1/builds/{build.build.pk}/")
    assert response.status_code == 200
    assert response.json()["project"] == build.build.project.slug


def test_on_postgresql_the_key_lookup_is_prepared_once_per_connection(api, build):
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are a PostgreSQL matter")
    client = api.as_key(build.token)
    for _ in range(8):
        assert client.get("/api/v1/keys/self").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE starts_with(statement, %s) "
            "AND statement LIKE '%%.\"digest\" = $_'",
            [_digest_lookup(connection).sql[:200]],
        )
        assert cursor.fetchone()[0] == 1
