"""Latency other requests see while the object store is slow or dead.

The deployment shape on loopback: gunicorn (2 processes x 4 threads), moto's S3 server behind
a fault-injecting proxy (devtools/faults.py), SQLite or, with BENCH_DATABASE_URL, PostgreSQL
(the bench creates, then drops, a fresh database per code version, named after that URL's with
a suffix). Two scenarios, each with a same-run baseline (S3 healthy):

A. S3 slow to complete uploads (CompleteMultipartUpload delayed SLOW_COMPLETE seconds): uploads
   to one build run back to back in the background while build creation in the same project
   and /healthz are timed.
B. S3 accepting connections and never answering: DEAD_GETS concurrent artifact GETs while
   /healthz is timed; and how long those GETs took, with which status.

With BENCH_BASELINE_REV=<git revision> the same scenarios also run on that revision (exported
with git archive into a temporary directory), so the before/after figures come from one run.
Figures are printed (medians, max), never asserted.
"""

import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3

from bench.common import table
from devtools.faults import FaultyS3, is_object_completion
from devtools.servers import free_port, stop, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
SLOW_COMPLETE = float(os.environ.get("BENCH_SLOW_COMPLETE", "5"))
WINDOW = float(os.environ.get("BENCH_WINDOW", "12"))
DEAD_GETS = int(os.environ.get("BENCH_DEAD_GETS", "24"))
UPLOAD_SIZE = 6 * MiB
# A client stops waiting after this long ("no answer"); the times are then capped at it.
GIVE_UP = float(os.environ.get("BENCH_GIVE_UP", "60"))


def request(port, method, path, token=None, body=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    start = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        status, data = "no answer", b""
    finally:
        conn.close()
    return status, data, time.perf_counter() - start


class App:
    def __init__(self, code: Path, s3_endpoint: str, bucket: str, database_url: str | None):
        self.code = code
        self.data_dir = Path(tempfile.mkdtemp(prefix="ac-bench-storage-"))
        self.env = {
            **os.environ,
            "AC_DATA_DIR": str(self.data_dir),
            "SECRET_KEY": "bench-only-secret-key-never-used-in-any-deployment-0001",
            "TOKEN_PEPPER": "bench-only-token-pepper-never-used-in-any-deployment-01",
            "STORAGE_BACKEND": "s3",
            "AWS_STORAGE_BUCKET_NAME": bucket,
            "AWS_S3_ENDPOINT_URL": s3_endpoint,
            "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "ARTIFACT_S3_PART_SIZE": str(5 * MiB),
        }
        for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL"):
            self.env.pop(name, None)
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.python = [sys.executable]
        if code != ROOT:
            # The editable install maps the project's packages to this checkout: import the
            # baseline's code only (no site processing, its directory first).
            self.python = [sys.executable, "-S"]
            self.env["PYTHONPATH"] = f"{code}{os.pathsep}{sysconfig.get_paths()['purelib']}"
        self.manage("migrate", "--noinput")
        slug = f"bench{uuid.uuid4().hex[:8]}"
        self.slug = slug
        self.project_token = self.manage("create_project", slug).strip().splitlines()[-1]
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                *self.python,
                "-m",
                "gunicorn",
                "artifactcourier.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
                "--timeout",
                "300",
            ],
            cwd=code,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc)

    def manage(self, *args) -> str:
        return subprocess.run(
            [*self.python, "manage.py", *args],
            cwd=self.code,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def build_create(self):
        status, data, seconds = request(
            self.port,
            "POST",
            f"/api/v1/projects/{self.slug}/builds/",
            self.project_token,
            {"ref": "refs/heads/main", "commit": "c" * 40, "trusted": True},
        )
        if status != 201:
            print(f"build creation answered {status}: {data[:200]!r}", file=sys.stderr)
        return (json.loads(data) if status == 201 else None), seconds

    def build_for_scenario(self) -> dict:
        for _ in range(30):
            build, _ = self.build_create()
            if build is not None:
                return build
            time.sleep(2)
        raise RuntimeError("no build could be created")

    def close(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"


def probe_while(app: App, busy: threading.Event, *, builds: bool) -> tuple[list, list]:
    """Time /healthz (and build creation) every 0.2 s while ``busy`` is set."""
    health, creations = [], []
    while busy.is_set():
        health.append(request(app.port, "GET", "/healthz", timeout=300)[2])
        if builds:
            creations.append(app.build_create())
        time.sleep(0.2)
    return health, creations


def scenario_slow_complete(app: App, proxy: FaultyS3, slow: bool) -> list:
    def rule(method: str, path: str):
        return SLOW_COMPLETE if slow and is_object_completion(method, path) else None

    proxy.rule = rule
    build = app.build_for_scenario()
    data = os.urandom(UPLOAD_SIZE)
    busy = threading.Event()
    busy.set()
    uploads = []
    upload_statuses = set()

    def uploader():
        deadline = time.monotonic() + WINDOW
        n = 0
        try:
            while time.monotonic() < deadline:
                path = f"/api/v1/builds/{build['id']}/artifacts/u{n}.bin"
                status, _, seconds = request(app.port, "PUT", path, build["key"]["token"], data)
                uploads.append(seconds)
                upload_statuses.add(str(status))
                n += 1
        finally:
            busy.clear()

    thread = threading.Thread(target=uploader)
    thread.start()
    time.sleep(0.5)
    health, creations = probe_while(app, busy, builds=True)
    thread.join()
    proxy.rule = lambda m, p: None
    made = sum(1 for ok in creations if ok[0])
    times = [seconds for _, seconds in creations]
    statuses = ",".join(sorted(upload_statuses))
    return [summary(times), summary(health), made, summary(uploads), statuses]


def scenario_dead_store(app: App, proxy: FaultyS3, dead: bool) -> list:
    build = app.build_for_scenario()
    token = build["key"]["token"]
    path = f"/api/v1/builds/{build['id']}/artifacts/kept.bin"
    request(app.port, "PUT", path, token, os.urandom(100_000))
    if dead:
        proxy.rule = lambda m, p: "blackhole"
    results = []

    def get():
        status, _, seconds = request(app.port, "GET", path, token, timeout=GIVE_UP)
        results.append((status, seconds))

    threads = [threading.Thread(target=get) for _ in range(DEAD_GETS)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    health = [request(app.port, "GET", "/healthz", timeout=GIVE_UP)[2] for _ in range(3)]
    for thread in threads:
        thread.join()
    proxy.rule = lambda m, p: None
    statuses = sorted({str(s) for s, _ in results})
    return [summary(health), summary([s for _, s in results]), ",".join(statuses)]


@contextlib.contextmanager
def fresh_database(url: str | None, suffix: str):
    if not url:
        yield None
        return
    import psycopg

    base, _, name = url.rpartition("/")
    name = f"{name}_{suffix}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(label: str, code: Path, s3_server: str, database_url: str | None) -> list[list]:
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=bucket)
    rows = []
    # The proxy closes a never-answered call after 120 s, bounding the old code's hang.
    with FaultyS3(s3_server, max_wait=120) as proxy:
        app = App(code, proxy.url, bucket, database_url)
        try:
            rows.append([label, "A: S3 healthy", *scenario_slow_complete(app, proxy, False)])
            slow = f"A: complete +{SLOW_COMPLETE:.0f}s"
            rows.append([label, slow, *scenario_slow_complete(app, proxy, True)])
            rows.append([label, "B: S3 healthy", *scenario_dead_store(app, proxy, False), ""])
            rows.append([label, "B: S3 never answers", *scenario_dead_store(app, proxy, True), ""])
        finally:
            proxy.stop()
            app.close()
    return rows


def main() -> None:
    database_url = os.environ.get("BENCH_DATABASE_URL") or None
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    codes = [("current", ROOT, None)]
    baseline_rev = os.environ.get("BENCH_BASELINE_REV")
    if baseline_rev:
        old = Path(tempfile.mkdtemp(prefix="ac-bench-baseline-"))
        archive = subprocess.run(
            ["git", "archive", baseline_rev], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        codes.insert(0, (f"baseline {baseline_rev[:10]}", old, old))
    try:
        wait_for_port(port, moto)
        rows = []
        for index, (label, code, _) in enumerate(codes):
            with fresh_database(database_url, f"bench{index}") as url:
                rows += run(label, code, f"http://127.0.0.1:{port}", url)
    finally:
        stop(moto)
        for _, _, tmp in codes:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    a_rows = [r[:7] for r in rows if r[1].startswith("A")]
    b_rows = [r[:5] for r in rows if r[1].startswith("B")]
    table(
        "A. Uploads completing on a slow S3: what the rest of the project sees (ms, median / max)",
        ["code", "S3", "build create", "/healthz", "builds made", "each upload", "upload statuses"],
        a_rows,
    )
    table(
        f"B. {DEAD_GETS} concurrent artifact GETs (ms, median / max)",
        ["code", "S3", "/healthz", "the GETs", "their statuses"],
        b_rows,
    )


if __name__ == "__main__":
    main()
