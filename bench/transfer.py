"""Artifact transfer on loopback: the streamed PUT and the download under gunicorn, against
nginx doing the least it can with the same bytes, and against the naive DRF way.

- upload: PUT /api/v1/builds/{id}/artifacts/{path} (SHA-256 computed and verified) vs. nginx's
  WebDAV PUT writing the body to disk (no hash) vs. a DRF multipart form saved with
  default_storage.save;
- download: GET of the artifact through the API vs. nginx serving the same file statically;
- peak RSS of the gunicorn worker while it receives 1 GiB and 4 GiB;
- 50 builds uploading the same 100 MiB file: bytes on disk.

Every client is curl, run one request at a time; variants are interleaved round by round (in
rotating order) so machine noise hits them alike, and medians are reported. Dirty pages are
flushed (sync) before each timed transfer. gunicorn runs with the repository's configuration
(gunicorn.conf.py: threaded workers), in one process.

Needs curl and nginx with the DAV module (Debian: nginx-light or nginx-full): checked before
anything is written; run as root on Debian, a missing nginx is installed (apt-get install
nginx-light). Files go to a temporary directory under $AC_BENCH_DIR (default: var/ in the
repository, on disk rather than a RAM-backed /tmp), removed at the end, as is everything else
the run created. Options: --rounds N, --size-mib N, --big-gib N (0 skips the 4 GiB RSS run),
--dedup-builds N, --dedup-mib N.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, median, table
from devtools.servers import free_port, stop, wait_for_port
from devtools.servers import start_gunicorn as _start_gunicorn

MiB = 1024 * 1024


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        remaining = size
        while remaining:
            block = os.urandom(min(64 * MiB, remaining))
            digest.update(block)
            fh.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def curl(*args: str) -> tuple[int, float, bytes]:
    """Run curl once; return (HTTP status, seconds from curl's own clock, response body)."""
    out = subprocess.run(
        ["curl", "-sS", "-H", "Expect:", "-w", "\n%{http_code} %{time_total}", *args],
        check=True,
        capture_output=True,
    ).stdout
    body, _, tail = out.rpartition(b"\n")
    status, seconds = tail.split()
    return int(status), float(seconds), body


def timed(fn) -> float:
    os.sync()  # start every transfer with no dirty pages left by the previous one
    return fn()


def proc_status(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def gunicorn_worker(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in root.rglob("*") if p.is_file())


NGINX_CONF = """\
{user}
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    client_max_body_size 0;
    client_body_temp_path {work}/nginx-dav/.tmp;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /dav/ {{
            alias {work}/nginx-dav/;
            dav_methods PUT;
            create_full_put_path on;
        }}
        location /static/ {{
            alias {static}/;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """nginx's path; installed with apt-get when missing and we may (root on Debian)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("nginx is missing: installing Debian's nginx-light (apt-get) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx-light"],
            check=True,
            env=env,
        )
        # The package starts its own server on port 80; this benchmark runs its own.
        subprocess.run(["service", "nginx", "stop"], check=False, capture_output=True)
        return nginx_binary()
    raise SystemExit(
        "bench/transfer.py compares with nginx, which is not installed: install it first "
        "(Debian: sudo apt-get install nginx-light), or run as root to have it installed."
    )


def start_nginx(nginx: str, work: Path, static: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    for d in ["nginx-dav/.tmp", "nginx-tmp"]:
        (work / d).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, work=work, port=port, static=static))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)])
    wait_for_port(port, proc)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--big-gib", type=int, default=4, help="0 skips the big RSS run")
    parser.add_argument("--dedup-builds", type=int, default=50)
    parser.add_argument("--dedup-mib", type=int, default=100)
    args = parser.parse_args()

    # What is needed, checked before a single byte is written.
    if not shutil.which("curl"):
        raise SystemExit("bench/transfer.py drives its transfers with curl: install it first.")
    nginx = nginx_binary()
    base = Path(os.environ.get("AC_BENCH_DIR") or ROOT / "var")
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ac-transfer-", dir=base))
    os.environ["AC_DATA_DIR"] = str(work / "data")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.transfer_site"
    procs: list[subprocess.Popen] = []
    try:
        run(args, nginx, work, procs)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def run(args, nginx_path: str, work: Path, procs: list) -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from django.conf import settings

    from devtools.factories import make_build, make_project

    project = make_project(slug="bench")
    size = args.size_mib * MiB
    payload = work / "payload.bin"
    print(f"writing a {args.size_mib} MiB random file ...", flush=True)
    digest = random_file(payload, size)

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.transfer_site"}
    env.pop("DATABASE_URL", None)
    app, app_port = _start_gunicorn(env)
    procs.append(app)
    static = Path(settings.ARTIFACT_ROOT)
    nginx, nginx_port = start_nginx(nginx_path, work, static)
    procs.append(nginx)
    app_url = f"http://127.0.0.1:{app_port}"
    nginx_url = f"http://127.0.0.1:{nginx_port}"

    build = make_build(project)
    auth = ["-H", f"Authorization: Bearer {build.token}"]
    counter = iter(range(1_000_000))

    def api_put(file: Path = payload) -> float:
        url = f"{app_url}/api/v1/builds/{build.build.pk}/artifacts/run/{next(counter)}.bin"
        status, seconds, body = curl(*auth, "-T", str(file), url)
        assert status == 201, (status, body[:300])
        return seconds

    def nginx_put() -> float:
        status, seconds, body = curl("-T", str(payload), f"{nginx_url}/dav/payload.bin")
        assert status in (201, 204), (status, body[:300])
        return seconds

    def naive_post() -> float:
        status, seconds, body = curl("-F", f"file=@{payload}", f"{app_url}/naive/upload")
        assert status == 201, (status, body[:300])
        (static / json.loads(body)["name"]).unlink()
        return seconds

    # Warm up every path once (imports, first DB connection, nginx's temp dirs).
    first = f"{app_url}/api/v1/builds/{build.build.pk}/artifacts/first.bin"
    status, _, body = curl(*auth, "-T", str(payload), first)
    assert status == 201 and json.loads(body)["sha256"] == digest, body[:300]
    nginx_put()
    naive_post()

    uploads = {"streamed PUT (API, sha256 verified)": api_put, "nginx WebDAV PUT": nginx_put}
    uploads["DRF multipart + default_storage.save"] = naive_post
    upload_times = run_interleaved(uploads, args.rounds)

    # Download: the artifact through the API vs. nginx serving that very blob file.
    blob_name = next((static / "blobs").rglob(f"{digest}.*")).relative_to(static)

    def api_get() -> float:
        url = f"{app_url}/api/v1/builds/{build.build.pk}/artifacts/first.bin"
        status, seconds, _ = curl(*auth, "-o", "/dev/null", url)
        assert status == 200, status
        return seconds

    def nginx_get() -> float:
        status, seconds, _ = curl("-o", "/dev/null", f"{nginx_url}/static/{blob_name}")
        assert status == 200, status
        return seconds

    download_times = run_interleaved({"API GET": api_get, "nginx static": nginx_get}, args.rounds)

    # Peak RSS of the worker receiving one body (VmHWM reset through clear_refs before each).
    worker = gunicorn_worker(app.pid)
    rss = [("idle worker", proc_status(worker, "VmRSS"))]
    big_sizes = [(f"{args.size_mib} MiB", payload)]
    if args.big_gib:
        big = work / "big.bin"
        print(f"writing a {args.big_gib} GiB random file ...", flush=True)
        random_file(big, args.big_gib * 1024 * MiB)
        big_sizes.append((f"{args.big_gib} GiB", big))
    for label, file in big_sizes:
        Path(f"/proc/{worker}/clear_refs").write_text("5")
        api_put(file)
        rss.append((f"peak while receiving {label}", proc_status(worker, "VmHWM")))
        if file != payload:
            file.unlink()

    # Dedup: N builds upload the same file; the store keeps one copy.
    dedup_file = work / "dedup.bin"
    random_file(dedup_file, args.dedup_mib * MiB)
    before = disk_bytes(static)
    for _ in range(args.dedup_builds):
        other = make_build(project)
        url = f"{app_url}/api/v1/builds/{other.build.pk}/artifacts/dist/app.bin"
        bearer = f"Authorization: Bearer {other.token}"
        status, _, body = curl("-H", bearer, "-T", str(dedup_file), url)
        assert status == 201, body[:300]
    stored = disk_bytes(static) - before

    report(args, size, upload_times, download_times, rss, stored)


def run_interleaved(variants: dict, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            times[name].append(timed(variants[name]))
        print(f"round {r + 1}/{rounds} done", flush=True)
    return times


def report(args, size, upload_times, download_times, rss, stored) -> None:
    def rows(times: dict, baseline: str) -> list[list[str]]:
        base = size / median(times[baseline])
        out = []
        for name, samples in times.items():
            rate = size / median(samples)
            spread = f"{size / max(samples) / 1e6:.0f}-{size / min(samples) / 1e6:.0f}"
            out.append([name, f"{rate / 1e6:.0f}", spread, f"{rate / base:.2f}x"])
        return out

    header = ["variant", "MB/s (median)", "min-max MB/s", "vs nginx"]
    table(
        f"Upload of {args.size_mib} MiB on loopback, gunicorn (gunicorn.conf.py, 1 process), "
        f"median of {args.rounds} interleaved rounds (goal: streamed PUT >= 0.9x nginx)",
        header,
        rows(upload_times, "nginx WebDAV PUT"),
    )
    table(
        f"Download of {args.size_mib} MiB (goal >= 0.9x nginx)",
        header,
        rows(download_times, "nginx static"),
    )
    table(
        "gunicorn worker memory (goal: flat, <= 120 MiB)",
        ["", "MiB"],
        [[label, f"{kib / 1024:.0f}"] for label, kib in rss],
    )
    logical = args.dedup_builds * args.dedup_mib * MiB
    table(
        f"{args.dedup_builds} builds uploading the same {args.dedup_mib} MiB file",
        ["", "MiB"],
        [
            ["uploaded (logical)", f"{logical / MiB:.0f}"],
            ["on disk", f"{stored / MiB:.1f}"],
        ],
    )


if __name__ == "__main__":
    main()
