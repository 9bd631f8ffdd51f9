"""Webhook fan-out: one finished build, 500 subscriptions, receivers on loopback.

The whole service as processes (gunicorn, a Celery worker with beat on Redis db 7 unless
BENCH_REDIS_URL says otherwise, a fresh SQLite database). For each worker configuration:
finish one build and time from the finish request to the last delivery received (goal <= 10 s),
and the sustained rate (deliveries/s between the first and the last arrival). Baseline in the
same run: the same 500 signed POSTs sent by one plain loop (no queue, no database, no links).
BENCH_DATABASE_URL runs it on PostgreSQL instead (an empty database).
Then the per-attempt cost of minting the payload's links (share_links) against building the
whole request. Medians over ROUNDS; figures are printed, never asserted.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from bench.common import median, table
from devtools.receivers import Receiver
from devtools.stack import Stack

SUBSCRIPTIONS = int(os.environ.get("BENCH_SUBSCRIPTIONS", "500"))
RECEIVERS = 10
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
# Worker pools compared; BENCH_CONFIGS="threads:16,prefork:4" to choose.
CONFIGS = [
    (pool, int(n))
    for pool, n in (
        c.split(":")
        for c in os.environ.get("BENCH_CONFIGS", "prefork:2,prefork:4,prefork:8,threads:16").split(
            ","
        )
    )
]


def api(stack, method, path, token, **kwargs):
    response = requests.request(
        method,
        stack.base_url + path,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
        **kwargs,
    )
    response.raise_for_status()
    return response.json() if response.content else None


def one_fanout(stack, token, receivers) -> tuple[float, float, float]:
    build = api(
        stack,
        "POST",
        "/api/v1/projects/app/builds/",
        token,
        json={"ref": "refs/heads/main", "commit": "ab" * 20, "trusted": True},
    )
    key = build["key"]["token"]
    for i in range(3):
        requests.put(
            f"{stack.base_url}/api/v1/builds/{build['id']}/artifacts/dist/f{i}.bin",
            data=os.urandom(1024),
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        ).raise_for_status()
    before = sum(len(r.received) for r in receivers)
    start = time.monotonic()
    api(stack, "POST", f"/api/v1/builds/{build['id']}/finish", key, json={"state": "succeeded"})
    answered = time.monotonic() - start
    deadline = start + 120
    while sum(len(r.received) for r in receivers) < before + SUBSCRIPTIONS:
        if time.monotonic() > deadline:
            raise TimeoutError("deliveries did not all arrive within 120 s")
        time.sleep(0.02)
    arrivals = sorted(x.at for r in receivers for x in r.received)[before:]
    total = arrivals[-1] - start
    spread = max(arrivals[-1] - arrivals[0], 1e-6)
    return total, SUBSCRIPTIONS / spread, answered


def baseline(receivers, bodies) -> float:
    """The same number of POSTs from one plain loop (keep-alive session per receiver)."""
    sessions = [requests.Session() for _ in receivers]
    start = time.monotonic()
    for i in range(SUBSCRIPTIONS):
        receiver = receivers[i % len(receivers)]
        sessions[i % len(receivers)].post(receiver.url, data=bodies, timeout=30)
    return time.monotonic() - start


def link_costs(stack) -> tuple[float, float, int]:
    """ms per share_links call and per whole request build, in this process on the stack's DB."""
    names = ("AC_", "WEBHOOK_", "DATABASE_URL", "SECRET_KEY", "TOKEN_PEPPER")
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith(names)})
    if "DATABASE_URL" not in stack.env:
        os.environ.pop("DATABASE_URL", None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "artifactcourier.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.utils import timezone

    from webhooks.links import links_mint
    from webhooks.models import Delivery
    from webhooks.services import request_build

    delivery = (
        Delivery.objects.filter(read_key__isnull=False, build__isnull=False)
        .select_related("subscription__project", "build", "read_key")
        .first()
    )
    now = timezone.now()
    mint, whole = [], []
    for _ in range(200):
        t = time.perf_counter()
        links_mint(
            key=delivery.read_key,
            build=delivery.build,
            expires_at=now,
            base_url="http://x",
            limit=settings.WEBHOOK_PAYLOAD_MAX_ARTIFACTS,
        )
        mint.append(time.perf_counter() - t)
        t = time.perf_counter()
        request_build(delivery=delivery, now=now)
        whole.append(time.perf_counter() - t)
    durations = list(Delivery.objects.values_list("attempts__duration_ms", flat=True))
    return median(mint) * 1000, median(whole) * 1000, int(median([d for d in durations if d]))


def main() -> None:
    print(f"load average at start: {os.getloadavg()} (2 cores, shared with parallel work)")
    data_dir = Path(tempfile.mkdtemp(prefix="ac-fanout-"))
    receivers = [Receiver().__enter__() for _ in range(RECEIVERS)]
    extra = {"WEBHOOK_SWEEP_EVERY_SECONDS": "30"}
    if os.environ.get("BENCH_DATABASE_URL"):  # an empty PostgreSQL database, e.g.
        extra["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
        extra.setdefault("SECRET_KEY", "bench-only-secret-key-never-used-in-any-deployment-1")
        extra.setdefault("TOKEN_PEPPER", "bench-only-token-pepper-never-used-in-any-deployment")
    stack = Stack(data_dir, REDIS_URL, extra)
    try:
        stack.start(concurrency=CONFIGS[0][1], pool=CONFIGS[0][0])
        token = stack.project_key("app", "builds:create", "webhooks:manage")
        for i in range(SUBSCRIPTIONS):
            api(
                stack,
                "POST",
                "/api/v1/projects/app/webhooks/",
                token,
                json={"url": receivers[i % RECEIVERS].url, "events": ["build.succeeded"]},
            )
        rows = []
        base = []
        body = b'{"type":"build.succeeded","data":{}}' * 20
        for pool, concurrency in CONFIGS:
            if stack.worker is None or stack.worker.poll() is not None or rows:
                stack.kill_worker()
                stack.start_worker(concurrency=concurrency, pool=pool)
            one_fanout(stack, token, receivers)  # warm-up: worker processes, connections
            results = [one_fanout(stack, token, receivers) for _ in range(ROUNDS)]
            base.append(baseline(receivers, body))
            total = median([r[0] for r in results])
            rate = median([r[1] for r in results])
            answered = median([r[2] for r in results])
            name = f"{pool} x{concurrency}"
            rows.append([name, f"{answered:.2f}", f"{total:.2f}", f"{rate:.0f}"])
        base_s = median(base)
        for row in rows:
            row.append(f"{float(row[2]) / base_s:.1f}x")
        table(
            f"Fan-out of one finished build to {SUBSCRIPTIONS} subscriptions "
            f"(median of {ROUNDS}; baseline: {SUBSCRIPTIONS} plain POSTs in one loop, "
            f"median {base_s:.2f} s)",
            ["worker", "finish answered (s)", "finish -> last (s)", "deliveries/s", "vs baseline"],
            rows,
        )
        mint_ms, whole_ms, attempt_ms = link_costs(stack)
        table(
            "Per-attempt cost of fresh links (3 artifacts; medians of 200)",
            ["share_links (ms)", "whole request build (ms)", "median attempt (ms)"],
            [[f"{mint_ms:.2f}", f"{whole_ms:.2f}", attempt_ms]],
        )
        print(f"load average at end: {os.getloadavg()}")
    finally:
        stack.stop()
        for receiver in receivers:
            receiver.__exit__(None, None, None)


if __name__ == "__main__":
    main()
