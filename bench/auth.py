"""Authentication overhead: GET /api/v1/builds/{id}/ with a build key vs. the same view open.

Both run in this process through Django's test client against the same database, interleaved
round by round so machine noise hits both alike. Prints medians over rounds and the ratio
(authenticated req/s / open req/s; goal >= 0.90), and the cost of rejecting a bad-checksum token.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import contextlib

from bench.common import median, percentile, setup_django, table

ROUNDS = 7
REQUESTS = 400


def timed_requests(client, url: str, n: int, **headers) -> list[float]:
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(url, **headers)
        latencies.append(time.perf_counter() - start)
        assert response.status_code in (200, 401), response.status_code
    return latencies


def main() -> None:
    setup_django()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from tests.factories import make_build, make_project

    created = make_build(make_project(slug="bench"), ref="refs/heads/main")
    build_id, token = created.build.pk, created.token
    bad = token[:-1] + ("A" if token[-1] != "A" else "B")
    client = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    bad_auth = {"HTTP_AUTHORIZATION": f"Bearer {bad}"}
    authed_url, open_url = f"/api/v1/builds/{build_id}/", f"/api/v1/open/builds/{build_id}/"

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
    print(f"\nratio authenticated/open req/s: {ratio:.2f}  (goal >= 0.90)")
    print(
        f"bad-checksum rejection: {check_us:.2f} µs in crypto.token_kind, "
        f"{len(queries)} database queries for the whole 401 request"
    )


if __name__ == "__main__":
    main()
