"""Signed links on loopback, against nginx serving the same file statically (same run):

1. time to first byte of a signed 1-byte artifact (X-Accel mode through nginx, direct mode
   from gunicorn) vs. the same file from nginx static — goal: at most 2 ms extra at p50;
2. a large signed download (1 GiB by default) vs. nginx static — goal: at least 0.9x in X-Accel
   mode; direct mode reported too;
3. while 32 clients download slowly (rate-limited curl), p50/p99 of
   ``GET /api/v1/builds/{id}/`` in direct vs. X-Accel mode — goal: p99 at most 50 ms with X-Accel.

Variants are interleaved round by round so machine noise hits them alike; medians are
reported. gunicorn runs with the repository's gunicorn.conf.py when there is one, else
gthread (2 workers x 4 threads). Needs nginx (Debian: nginx-light) and curl.
Options: --rounds N (TTFB samples), --big-mib N, --big-rounds N, --slow-clients N.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, median, percentile, table
from devtools.share_stack import ShareStack

MiB = 1024 * 1024


def gunicorn_options() -> tuple[str, ...]:
    if (ROOT / "gunicorn.conf.py").exists():
        return ("-c", str(ROOT / "gunicorn.conf.py"))
    return ("--worker-class", "gthread", "--workers", "2", "--threads", "4")


def curl_times(url: str, *extra: str) -> tuple[float, float, int]:
    """(time to first byte, total seconds, HTTP status) of one curl GET, from curl's clock."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            os.devnull,
            "-w",
            "%{time_starttransfer} %{time_total} %{http_code}",
            *extra,
            url,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def static_url(stack: ShareStack, storage_path: str) -> str:
    return f"{stack.nginx.url}/static-baseline/{storage_path}"


def blob_path(stack: ShareStack, sha256: str) -> str:
    found = sorted((stack.artifact_root / "blobs" / sha256[:2]).glob(f"{sha256}.*"))
    return str(found[0].relative_to(stack.artifact_root))


def big_file(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        remaining = size
        while remaining:
            block = os.urandom(min(16 * MiB, remaining))
            fh.write(block)
            remaining -= len(block)


def upload_file(stack: ShareStack, path: str, source: Path) -> dict:
    """A streamed PUT with curl (the file is never read into this process)."""
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-f",
            "-T",
            str(source),
            "-H",
            f"Authorization: Bearer {stack.token}",
            "-H",
            "Expect:",
            f"http://127.0.0.1:{stack.app_port}/api/v1/builds/{stack.build_id}/artifacts/{path}",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)


def api_latencies(stack: ShareStack, count: int) -> tuple[list[float], int]:
    """``count`` sequential GETs of the build (a new connection each), in ms; and failures."""
    host_port = stack.url.removeprefix("http://").split(":")
    samples, failures = [], 0
    for _ in range(count):
        start = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(host_port[0], int(host_port[1]), timeout=10)
            conn.request(
                "GET",
                f"/api/v1/builds/{stack.build_id}/",
                headers={"Authorization": f"Bearer {stack.token}"},
            )
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status != 200:
                raise OSError(f"status {response.status}")
        except OSError:
            # A refused or timed-out request counts as the full timeout: dropping it would make
            # a saturated server look fast.
            failures += 1
            samples.append(10_000.0)
            continue
        samples.append((time.perf_counter() - start) * 1000)
    return samples, failures


def under_slow_clients(stack: ShareStack, url: str, clients: int, count: int):
    """Measure api_latencies while ``clients`` rate-limited curls download ``url``."""
    procs = [
        subprocess.Popen(
            ["curl", "-sS", "-o", os.devnull, "--limit-rate", "100k", "--max-time", "120", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(clients)
    ]
    try:
        time.sleep(2)  # every slow client connected and streaming
        return api_latencies(stack, count)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--big-rounds", type=int, default=3)
    parser.add_argument("--slow-clients", type=int, default=32)
    parser.add_argument("--api-requests", type=int, default=200)
    args = parser.parse_args()
    for tool in ("nginx", "curl"):
        if shutil.which(tool) is None and not Path("/usr/sbin/nginx").exists():
            sys.exit(f"{tool} is needed (Debian: nginx-light, curl)")

    work = Path(tempfile.mkdtemp(prefix="ac-bench-share-"))
    stacks: dict[str, ShareStack] = {}
    try:
        options = gunicorn_options()
        stacks["x-accel"] = ShareStack(
            work / "xaccel", mode="x-accel", gunicorn_options=options, nginx_baseline=True
        )
        stacks["direct"] = ShareStack(work / "direct", mode="direct", gunicorn_options=options)
        big = work / "big.bin"
        big_file(big, args.big_mib * MiB)
        slow_source = work / "slow.bin"
        big_file(slow_source, 64 * MiB)
        links = {}
        for mode, stack in stacks.items():
            stack.upload("one.bin", b"x")
            upload_file(stack, "big.bin", big)
            upload_file(stack, "slow.bin", slow_source)
            shared = stack.share(expires_in=3600)
            links[mode] = {a["path"]: a for a in shared["artifacts"]}
        xaccel = stacks["x-accel"]
        static = {
            path: static_url(xaccel, blob_path(xaccel, links["x-accel"][path]["sha256"]))
            for path in ("one.bin", "big.bin")
        }

        # 1. TTFB of a 1-byte artifact.
        variants = {
            "nginx static": static["one.bin"],
            "app floor: /healthz via nginx": f"{xaccel.url}/healthz",
            "signed, x-accel": links["x-accel"]["one.bin"]["url"],
            "signed, direct": links["direct"]["one.bin"]["url"],
        }
        ttfb: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for i in range(args.rounds):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                first, _, status = curl_times(variants[name])
                assert status == 200, (name, status)
                ttfb[name].append(first * 1000)
        base = median(ttfb["nginx static"])
        table(
            "1. time to first byte, 1-byte artifact (ms, loopback)",
            ["variant", "p50", "p90", "p50 extra vs static"],
            [
                [name, f"{median(v):.2f}", f"{percentile(v, 90):.2f}", f"{median(v) - base:+.2f}"]
                for name, v in ttfb.items()
            ],
        )

        # 2. Large download throughput.
        variants = {
            "nginx static": static["big.bin"],
            "signed, x-accel": links["x-accel"]["big.bin"]["url"],
            "signed, direct": links["direct"]["big.bin"]["url"],
        }
        totals: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for i in range(args.big_rounds):
            for name in names[i % 3 :] + names[: i % 3]:
                _, total, status = curl_times(variants[name])
                assert status == 200, (name, status)
                totals[name].append(total)
        base = median(totals["nginx static"])
        table(
            f"2. {args.big_mib} MiB download (median of {args.big_rounds})",
            ["variant", "seconds", "MiB/s", "throughput vs static"],
            [
                [
                    name,
                    f"{median(v):.2f}",
                    f"{args.big_mib / median(v):.0f}",
                    f"{base / median(v):.2f}x",
                ]
                for name, v in totals.items()
            ],
        )

        # 3. API latency while slow clients download.
        rows = []
        for mode in ("direct", "x-accel"):
            stack = stacks[mode]
            idle, _ = api_latencies(stack, 50)
            busy, failures = under_slow_clients(
                stack, links[mode]["slow.bin"]["url"], args.slow_clients, args.api_requests
            )
            rows.append(
                [
                    mode,
                    f"{median(idle):.1f}",
                    f"{median(busy):.1f}" if busy else "-",
                    f"{percentile(busy, 99):.1f}" if busy else "-",
                    f"{failures}/{args.api_requests}",
                ]
            )
        table(
            f"3. GET /api/v1/builds/{{id}}/ while {args.slow_clients} clients download at 100 kB/s"
            " (ms)",
            ["mode", "idle p50", "busy p50", "busy p99", "failed (counted as 10 s)"],
            rows,
        )
        print(f"\ngunicorn options: {' '.join(gunicorn_options())}")
    finally:
        for stack in stacks.values():
            stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
