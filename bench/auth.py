"""Authentication overhead.

1. GET /api/v1/builds/{id}/ with a build key vs. the same view open, interleaved round by round
   so machine noise hits both alike, measured twice: (a) over HTTP against gunicorn on loopback
   (one sync worker: what a client sees), (b) in this process through Django's test client
   (no HTTP: the authentication share of the Django work alone, the harsher ratio). Prints
   medians over rounds and the ratio (authenticated req/s / open req/s; goal >= 0.90), and the
   cost of rejecting a bad-checksum token.
2. Key verification alone (µs per call, no HTTP): our key_authenticate for a build key and for
   a key derived 5 levels deep, against djangorestframework-api-key's APIKey.objects.is_valid /
   get_from_key and a plain indexed ORM lookup of our digest, on the same database in the same
   run, interleaved. Goals: ours <= the plain lookup (<= 0.75x drf-api-key); 5 levels deep
   <= 2x a root key. Figures are printed, never asserted.
"""

import http.client
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import contextlib

from bench.common import median, percentile, setup_django, table
from devtools.servers import start_gunicorn, stop

ROUNDS = 7
REQUESTS = 400
VERIFY_CALLS = 2000
DERIVED_DEPTH = 5


def timed_requests(client, url: str, n: int, **headers) -> list[float]:
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(url, **headers)
        latencies.append(time.perf_counter() - start)
        assert response.status_code in (200, 401), response.status_code
    return latencies


HTTP_REQUESTS = 300


def timed_http(port: int, path: str, n: int, headers: dict, timeout: float = 10) -> list[float]:
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()
        conn.close()
        latencies.append(time.perf_counter() - start)
        assert response.status in (200, 401), response.status
    return latencies


def over_http(authed_url: str, open_url: str, token: str) -> None:
    """The same comparison against gunicorn: the overhead a client actually sees."""
    from django.db import connection

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings"}
    server, port = start_gunicorn(env, "--log-level", "warning")
    try:
        auth = {"Authorization": f"Bearer {token}"}
        # The worker imports the app on its first request: on a loaded machine that alone can
        # take longer than a request's timeout.
        timed_http(port, open_url, 1, {}, timeout=120)
        timed_http(port, authed_url, 50, auth)
        timed_http(port, open_url, 50, {})
        rps_auth, rps_open, p50_auth, p50_open = [], [], [], []
        for _ in range(ROUNDS):
            a = timed_http(port, authed_url, HTTP_REQUESTS, auth)
            o = timed_http(port, open_url, HTTP_REQUESTS, {})
            rps_auth.append(HTTP_REQUESTS / sum(a))
            rps_open.append(HTTP_REQUESTS / sum(o))
            p50_auth.append(percentile(a, 50) * 1e6)
            p50_open.append(percentile(o, 50) * 1e6)
    finally:
        stop(server)
    table(
        f"GET /api/v1/builds/{{id}}/ over HTTP, gunicorn (1 sync worker), {connection.vendor}, "
        f"median of {ROUNDS} rounds x {HTTP_REQUESTS} requests",
        ["variant", "req/s", "p50 µs"],
        [
            ["open (no auth)", f"{median(rps_open):.0f}", f"{median(p50_open):.0f}"],
            ["build key", f"{median(rps_auth):.0f}", f"{median(p50_auth):.0f}"],
        ],
    )
    ratio = median(rps_auth) / median(rps_open)
    print(f"\nratio authenticated/open req/s over HTTP: {ratio:.2f}  (goal >= 0.90)")


def main() -> None:
    setup_django()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from devtools.factories import make_build, make_project

    created = make_build(make_project(slug="bench"), ref="refs/heads/main")
    build_id, token = created.build.pk, created.token
    bad = token[:-1] + ("A" if token[-1] != "A" else "B")
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    bad_auth = {"HTTP_AUTHORIZATION": f"Bearer {bad}"}
    authed_url, open_url = f"/api/v1/builds/{build_id}/", f"/api/v1/open/builds/{build_id}/"
    over_http(authed_url, open_url, token)

    timed_requests(client, authed_url, 50, **auth)  # warm up both paths
    timed_requests(client, open_url, 50)
    rps_auth, rps_open, p50_auth, p50_open, reject = [], [], [], [], []
    for _ in range(ROUNDS):
        a = timed_requests(client, authed_url, REQUESTS, **auth)
        o = timed_requests(client, open_url, REQUESTS)
        r = timed_requests(client, authed_url, REQUESTS, **bad_auth)
        rps_auth.append(REQUESTS / sum(a))
        rps_open.append(REQUESTS / sum(o))
        p50_auth.append(percentile(a, 50) * 1e6)
        p50_open.append(percentile(o, 50) * 1e6)
        reject.append(percentile(r, 50) * 1e6)

    from tokens import crypto

    n = 20000
    start = time.perf_counter()
    for _ in range(n):
        with contextlib.suppress(crypto.InvalidToken):
            crypto.token_kind(bad)
    check_us = (time.perf_counter() - start) / n * 1e6
    with CaptureQueriesContext(connection) as queries:
        client.get(authed_url, **bad_auth)

    vendor = connection.vendor
    table(
        f"GET /api/v1/builds/{{id}}/ in-process, {vendor}, median of {ROUNDS} rounds x "
        f"{REQUESTS} requests",
        ["variant", "req/s", "p50 µs"],
        [
            ["open (no auth)", f"{median(rps_open):.0f}", f"{median(p50_open):.0f}"],
            ["build key", f"{median(rps_auth):.0f}", f"{median(p50_auth):.0f}"],
            ["bad-checksum token (401)", "", f"{median(reject):.0f}"],
        ],
    )
    ratio = median(rps_auth) / median(rps_open)
    print(f"\nratio authenticated/open req/s in-process: {ratio:.2f}  (goal >= 0.90)")
    print(
        f"bad-checksum rejection: {check_us:.2f} µs in crypto.token_kind, "
        f"{len(queries)} database queries for the whole 401 request"
    )

    verification(created)


def per_call_us(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def verification(created) -> None:
    from django.conf import settings
    from django.db import connection
    from rest_framework_api_key.models import APIKey

    from tokens import crypto
    from tokens.models import ApiKey
    from tokens.services import key_authenticate, key_derive

    token = created.token
    parent, deep_token = created.key, token
    for _ in range(DERIVED_DEPTH):
        parent, deep_token = key_derive(parent=parent, scopes=["artifacts:read", "keys:mint"])
    assert parent.depth == DERIVED_DEPTH
    _, drf_key = APIKey.objects.create_key(name="bench")

    def plain_lookup():
        digest = crypto.token_digest(token, pepper=settings.TOKEN_PEPPER)
        return ApiKey.objects.get(digest=digest)

    def plain_lookup_with_build():
        # What authentication actually needs: effective scopes depend on the build's state.
        digest = crypto.token_digest(token, pepper=settings.TOKEN_PEPPER)
        return ApiKey.objects.select_related("build").get(digest=digest)

    variants = {
        "ours: build key (key_authenticate)": lambda: key_authenticate(token=token),
        f"ours: derived {DERIVED_DEPTH} levels deep": lambda: key_authenticate(token=deep_token),
        "plain indexed ORM digest lookup": plain_lookup,
        "plain ORM digest lookup + build join": plain_lookup_with_build,
        "drf-api-key APIKey.objects.is_valid": lambda: APIKey.objects.is_valid(drf_key),
        "drf-api-key APIKey.objects.get_from_key": lambda: APIKey.objects.get_from_key(drf_key),
    }
    for fn in variants.values():  # warm up (and record last use once, as in service)
        per_call_us(fn, 200)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, fn in variants.items():
            samples[name].append(per_call_us(fn, VERIFY_CALLS))
    us = {name: median(values) for name, values in samples.items()}
    ours, deep = (
        us["ours: build key (key_authenticate)"],
        us[f"ours: derived {DERIVED_DEPTH} levels deep"],
    )
    plain = us["plain indexed ORM digest lookup"]
    drf = us["drf-api-key APIKey.objects.is_valid"]
    table(
        f"Key verification, {connection.vendor}, median of {ROUNDS} interleaved rounds x "
        f"{VERIFY_CALLS} calls",
        ["variant", "µs/call", "x plain lookup", "x drf-api-key is_valid"],
        [[name, f"{v:.1f}", f"{v / plain:.2f}", f"{v / drf:.2f}"] for name, v in us.items()],
    )
    print(f"\nours / plain lookup: {ours / plain:.2f}  (goal <= 1.00)")
    print(f"ours / drf-api-key is_valid: {ours / drf:.2f}  (goal <= 0.75)")
    print(f"derived {DERIVED_DEPTH} deep / root: {deep / ours:.2f}  (goal <= 2.00)")


if __name__ == "__main__":
    main()
