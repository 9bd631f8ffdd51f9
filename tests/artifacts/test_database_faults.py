"""PostgreSQL hung, down, slow or holding a lock, behind a real gunicorn: every request is
answered within a bound (503 ``unavailable`` while the database cannot answer), and the service
recovers by itself once it can. The database is reached through a TCP relay that can freeze
(a server that accepts and acknowledges but never answers), refuse or slow every connection."""

import time
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection

from devtools.faults import FreezingTcpProxy

from .conftest import Store
from .test_dependencies_server import Live, artifact_path, live_env  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's failures"),
]

QUERY_TIMEOUT = 2


@pytest.fixture
def live_db(live_env):  # noqa: F811 (the fixture imported above)
    """gunicorn on the test's PostgreSQL database, reached through a FreezingTcpProxy."""
    from devtools.factories import make_project, make_project_key

    env, data_dir = live_env
    s = connection.settings_dict
    proxy = FreezingTcpProxy(s["HOST"] or "127.0.0.1", int(s["PORT"] or 5432))
    env.update(
        STORAGE_BACKEND="filesystem",
        DATABASE_URL=f"postgres://{s['USER']}@127.0.0.1:{proxy.port}/{s['NAME']}",
        DATABASE_CONNECT_TIMEOUT="2",
        DATABASE_QUERY_TIMEOUT=str(QUERY_TIMEOUT),
    )
    token = make_project_key(make_project(slug="live"))
    live = Live(env, data_dir, token, Store("filesystem", root=data_dir / "artifacts"))
    live.proxy = proxy
    live.start()
    try:
        yield live
    finally:
        proxy.stop()
        live.stop()


@contextmanager
def connections_held():
    """A connection of the test's own to the database (outside Django's)."""
    s = connection.settings_dict
    with psycopg.connect(
        host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"], dbname=s["NAME"],
        autocommit=True,
    ) as conn:  # fmt: skip
        yield conn


def timed(live, method, path, token, body=None):
    start = time.monotonic()
    status, answer = live.request(method, path, token, body, timeout=30)
    return status, answer, time.monotonic() - start


def test_a_hung_database_is_a_503_within_the_query_timeout_and_then_recovers(live_db):
    build = live_db.build_create()
    path = f"/api/v1/builds/{build['id']}/"
    assert live_db.request("GET", path, build["key"]["token"])[0] == 200
    live_db.proxy.freeze()
    try:
        status, answer, took = timed(live_db, "GET", path, build["key"]["token"])
        assert status == 503 and answer["code"] == "unavailable", answer
        assert took < QUERY_TIMEOUT + 4, took
    finally:
        live_db.proxy.thaw()
    status, _, _ = timed(live_db, "GET", path, build["key"]["token"])
    assert status == 200


def test_while_the_database_hangs_readiness_says_so_within_the_bound(live_db):
    assert live_db.request("GET", "/readyz", "")[0] == 200
    live_db.proxy.freeze()
    try:
        status, answer, took = timed(live_db, "GET", "/readyz", "")
        assert (status, answer) == (503, {"status": "unavailable", "database": "unavailable"})
        assert took < QUERY_TIMEOUT + 4, took
        # The process itself still answers.
        assert live_db.request("GET", "/healthz", "")[0] == 200
    finally:
        live_db.proxy.thaw()
    assert live_db.request("GET", "/readyz", "")[0] == 200


def test_a_database_refusing_connections_is_a_503_and_the_service_comes_back(live_db):
    build = live_db.build_create()
    path = f"/api/v1/builds/{build['id']}/"
    live_db.proxy.refuse()
    try:
        status, answer, took = timed(live_db, "GET", path, build["key"]["token"])
        assert status == 503 and answer["code"] == "unavailable", answer
        assert took < 2 + 4, took  # DATABASE_CONNECT_TIMEOUT, at most
    finally:
        live_db.proxy.restore()
    assert timed(live_db, "GET", path, build["key"]["token"])[0] == 200


def test_a_slow_database_that_answers_is_waited_for(live_db):
    build = live_db.build_create()
    live_db.proxy.delay = 0.05  # every piece of every statement's traffic
    status, answer, _ = timed(
        live_db, "PUT", artifact_path(build["id"], "slow.txt"), build["key"]["token"], b"slow"
    )
    assert status == 201, answer


def test_a_statement_waiting_on_a_lock_is_cancelled_at_the_deadline(live_db):
    """The server cancels it (statement_timeout): the request is a 503 and its session waits
    no longer, so it holds nothing of what it had taken."""
    from builds.models import Build

    build = live_db.build_create()
    url = f"/api/v1/builds/{build['id']}/finish"
    with connections_held() as other, other.transaction():
        other.execute("SELECT 1 FROM builds_build WHERE id = %s FOR UPDATE", [build["id"]])
        status, answer, took = timed(
            live_db, "POST", url, build["key"]["token"], {"state": "succeeded"}
        )
        assert status == 503 and answer["code"] == "unavailable", answer
        assert QUERY_TIMEOUT - 0.5 < took < QUERY_TIMEOUT + 4, took
        waiting = other.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        ).fetchone()[0]
        assert waiting == 0
    assert Build.objects.get(pk=build["id"]).state == "running"
    status, answer, _ = timed(live_db, "POST", url, build["key"]["token"], {"state": "succeeded"})
    assert status == 200, answer
