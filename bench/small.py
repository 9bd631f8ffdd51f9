"""Many small artifacts on loopback: 4 KiB PUTs and one batch upload against nginx's WebDAV PUT
of the same files, and how upload and listing times grow with the project's size.

- single PUTs: N files of 4 KiB, PUT one by one over keep-alive, on 1 and on 8 connections,
  to the app (gunicorn as `make run` serves it: gunicorn.conf.py when present, else 2 sync
  workers), to nginx's WebDAV module (writes the body to disk, no hash, no database), and to
  the floor: the same gunicorn serving bench/floor.py, which only reads the body; and the
  Django floors (8 connections): bench/floor_django.py, a Django project that only reads it,
  through a plain view and through a DRF view (no middleware, authentication or database);
- batch: N files as one tar stream to POST …/artifacts/batch, in files per second against
  nginx's best per-file rate: new random bytes every round (the goal's figure), and the very
  files the PUT rounds stored (what a CI re-run sends: members whose bytes the project already
  holds are linked without being written again);
- growth: the per-upload time and the time of a listing page (first and a late one) in a
  project (and build) of 10^3 and of 10^5 artifacts, rows seeded in bulk.

Every client is curl (a config file of N transfers, `--parallel` for 8 connections); variants
are interleaved round by round in rotating order, and medians are reported. The app runs on the
embedded default (SQLite), as `make run` does. Options: --files, --rounds, --large.
"""

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import ROOT, median, table
from bench.transfer import nginx_binary, start_nginx
from devtools.servers import start_gunicorn, stop

SIZE = 4096


def curl_many(transfers: list[tuple[str, str]], headers: list[str], connections: int) -> float:
    """PUT each ``(file, url)`` with one curl process; seconds of wall time. Every answer must
    be a success."""
    config = io.StringIO()
    for file, url in transfers:
        config.write(f'upload-file = "{file}"\nurl = "{url}"\noutput = "/dev/null"\n')
    args = ["curl", "-sS", "-K", "-", "-w", "%{http_code}\\n", "-H", "Expect:"]
    for header in headers:
        args += ["-H", header]
    if connections > 1:
        args += ["--parallel", "--parallel-max", str(connections)]
    start = time.perf_counter()
    out = subprocess.run(
        args, input=config.getvalue().encode(), capture_output=True, check=True
    ).stdout
    seconds = time.perf_counter() - start
    codes = out.decode().split()
    bad = [c for c in codes if c not in {"200", "201", "204"}]
    assert len(codes) == len(transfers) and not bad, (len(codes), bad[:5])
    return seconds


def curl_one(*args: str) -> tuple[int, float]:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-H",
            "Expect:",
            "-w",
            "%{http_code} %{time_total}",
            *args,
        ],
        capture_output=True,
        check=True,
    ).stdout.split()
    return int(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=1000, help="artifacts of the small project")
    parser.add_argument("--large", type=int, default=100_000, help="... of the large one")
    parser.add_argument("--samples", type=int, default=200, help="uploads per growth round")
    args = parser.parse_args()

    (ROOT / "var").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ac-small-", dir=ROOT / "var"))
    os.environ["AC_DATA_DIR"] = str(work / "data")
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.pop("DATABASE_URL", None)
    # The large growth build holds more than the default per-build file quota.
    os.environ["BUILD_ARTIFACTS_MAX_FILES"] = str(10 * args.large)
    procs: list[subprocess.Popen] = []
    try:
        run(args, work, procs)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, procs: list) -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from django.conf import settings

    from devtools.factories import make_build, make_project

    files = work / "files"
    files.mkdir()
    for i in range(args.files):
        (files / f"{i:05}.bin").write_bytes(os.urandom(SIZE))
    names = sorted(p.name for p in files.iterdir())
    batch = work / "batch.tar"
    with tarfile.open(batch, "w") as tar:
        for name in names:
            tar.add(files / name, arcname=f"out/{name}")

    env = {**os.environ}
    options = ["--workers", "2", "--timeout", "300"]
    if (ROOT / "gunicorn.conf.py").exists():
        options = ["-c", str(ROOT / "gunicorn.conf.py"), *options]
    app, app_port = start_gunicorn(env, *options)
    procs.append(app)
    # The same server with an app that only reads the body: the floor of any upload here.
    floor, floor_port = start_gunicorn(env, *options, app="bench.floor:application")
    procs.append(floor)
    floor_url = f"http://127.0.0.1:{floor_port}"
    # ... and with a Django project that does nothing (plain view, and DRF view).
    django_floor, django_floor_port = start_gunicorn(
        env, *options, app="bench.floor_django:application"
    )
    procs.append(django_floor)
    django_floor_url = f"http://127.0.0.1:{django_floor_port}"
    nginx, nginx_port = start_nginx(nginx_binary(), work, Path(settings.ARTIFACT_ROOT))
    procs.append(nginx)
    app_url, nginx_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{nginx_port}"
    project = make_project(slug="small")
    counter = iter(range(1_000_000))

    def app_puts(connections: int):
        def variant() -> float:
            created = make_build(project)
            base = f"{app_url}/api/v1/builds/{created.build.pk}/artifacts/out/"
            transfers = [(str(files / n), base + n) for n in names]
            auth = [f"Authorization: Bearer {created.token}"]
            return curl_many(transfers, auth, connections)

        return variant

    def floor_puts(connections: int):
        def variant() -> float:
            base = f"{floor_url}/r{next(counter)}/"
            return curl_many([(str(files / n), base + n) for n in names], [], connections)

        return variant

    def django_floor_puts(kind: str, connections: int):
        def variant() -> float:
            base = f"{django_floor_url}/{kind}/r{next(counter)}/"
            return curl_many([(str(files / n), base + n) for n in names], [], connections)

        return variant

    def nginx_puts(connections: int):
        def variant() -> float:
            base = f"{nginx_url}/dav/r{next(counter)}/"
            return curl_many([(str(files / n), base + n) for n in names], [], connections)

        return variant

    def fresh_batch() -> Path:
        """A tar of args.files new random 4 KiB files: bytes no project holds yet (the batch
        skips writing members whose bytes the project already stores)."""
        path = work / f"fresh-{next(counter)}.tar"
        with tarfile.open(path, "w") as tar:
            for name in names:
                info = tarfile.TarInfo(f"out/{name}")
                info.size = SIZE
                tar.addfile(info, io.BytesIO(os.urandom(SIZE)))
        return path

    def app_batch(fresh: bool):
        def variant() -> float:
            body = fresh_batch() if fresh else batch
            try:
                return post_batch(body)
            finally:
                if fresh:
                    body.unlink()

        return variant

    def post_batch(body: Path) -> float:
        created = make_build(project)
        url = f"{app_url}/api/v1/builds/{created.build.pk}/artifacts/batch?prefix=out"
        start = time.perf_counter()
        status, _ = curl_one(
            "-X",
            "POST",
            "--data-binary",
            f"@{body}",
            "-H",
            f"Authorization: Bearer {created.token}",
            "-H",
            "Content-Type: application/x-tar",
            url,
        )
        assert status == 201, status
        return time.perf_counter() - start

    # Warm up every path once.
    for warm in [app_puts(1), nginx_puts(1), django_floor_puts("drf", 1)]:
        warm()
    variants = {
        "app PUT, 1 connection": app_puts(1),
        "nginx PUT, 1 connection": nginx_puts(1),
        "floor PUT, 1 connection": floor_puts(1),
        "app PUT, 8 connections": app_puts(8),
        "nginx PUT, 8 connections": nginx_puts(8),
        "floor PUT, 8 connections": floor_puts(8),
        "Django floor PUT, 8 connections": django_floor_puts("django", 8),
        "DRF floor PUT, 8 connections": django_floor_puts("drf", 8),
        "app batch, new bytes (one tar)": app_batch(fresh=True),
        "app batch, bytes the project holds": app_batch(fresh=False),
    }
    times = interleaved(variants, args.rounds)
    rates = {name: args.files / median(samples) for name, samples in times.items()}
    nginx_best = max(rates["nginx PUT, 1 connection"], rates["nginx PUT, 8 connections"])
    baseline = {
        "app PUT, 1 connection": rates["nginx PUT, 1 connection"],
        "floor PUT, 1 connection": rates["nginx PUT, 1 connection"],
        "app PUT, 8 connections": rates["nginx PUT, 8 connections"],
        "floor PUT, 8 connections": rates["nginx PUT, 8 connections"],
        "Django floor PUT, 8 connections": rates["nginx PUT, 8 connections"],
        "DRF floor PUT, 8 connections": rates["nginx PUT, 8 connections"],
        "app batch, new bytes (one tar)": nginx_best,
        "app batch, bytes the project holds": nginx_best,
    }
    table(
        f"{args.files} x 4 KiB on loopback, median of {args.rounds} interleaved rounds "
        "(goals: 8 connections >= 0.1x nginx, batch of new bytes >= 0.5x nginx's best per-file "
        "rate; the batch of bytes the project already holds, as a CI re-run sends, is shown "
        "for information; 'floor' is the same gunicorn serving an app that only reads the body; "
        "'Django floor' and 'DRF floor', a Django project that only reads it: a plain view, "
        "and a DRF view without authentication, no middleware, no database)",
        ["variant", "files/s (median)", "vs nginx"],
        [
            [name, f"{rate:.0f}", f"{rate / baseline[name]:.3f}x" if name in baseline else ""]
            for name, rate in rates.items()
        ],
    )

    growth(args, app_url, work, files / names[0])


def interleaved(variants: dict, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(variants[name]())
        print(f"round {r + 1}/{rounds} done", flush=True)
    return times


def seed(project, count: int):
    """A build of ``project`` holding ``count`` artifacts, written in bulk (the database's
    triggers count them, as for uploads)."""
    from artifacts.models import Artifact, Blob
    from devtools.factories import make_build

    created = make_build(project)
    blob, _ = Blob.objects.get_or_create(
        sha256="0" * 64, defaults={"size": SIZE, "storage_name": "blobs/seed"}
    )
    batch = 5000
    for start in range(0, count, batch):
        Artifact.objects.bulk_create(
            [
                Artifact(build=created.build, path=f"seed/{i:07}", blob=blob)
                for i in range(start, min(count, start + batch))
            ]
        )
    return created


def growth(args, app_url: str, work: Path, file: Path) -> None:
    import json

    from devtools.factories import make_project

    print(f"seeding {args.small} and {args.large} artifacts ...", flush=True)
    sizes = {"small": args.small, "large": args.large}
    seeded = {label: seed(make_project(slug=f"growth-{label}"), n) for label, n in sizes.items()}
    counter = iter(range(1_000_000))

    def late_page(created) -> str:
        auth = ["-H", f"Authorization: Bearer {created.token}"]
        url = f"{app_url}/api/v1/builds/{created.build.pk}/artifacts/?page_size=1000"
        last = url
        while url:
            body = subprocess.run(
                ["curl", "-sS", *auth, url], capture_output=True, check=True
            ).stdout
            last, url = url, json.loads(body)["next"]
        return last.replace("page_size=1000", "page_size=100")

    pages = {label: late_page(created) for label, created in seeded.items()}

    def uploads(label: str):
        created = seeded[label]

        def variant() -> float:
            base = f"{app_url}/api/v1/builds/{created.build.pk}/artifacts/g{next(counter)}/"
            transfers = [(str(file), f"{base}{i}.bin") for i in range(args.samples)]
            auth = [f"Authorization: Bearer {created.token}"]
            return curl_many(transfers, auth, 1) / args.samples

        return variant

    def listing(label: str, late: bool):
        created = seeded[label]
        first = f"{app_url}/api/v1/builds/{created.build.pk}/artifacts/?page_size=100"

        def variant() -> float:
            url = pages[label] if late else first
            samples = []
            for _ in range(20):
                status, seconds = curl_one("-H", f"Authorization: Bearer {created.token}", url)
                assert status == 200, status
                samples.append(seconds)
            return median(samples)

        return variant

    variants = {}
    for label in sizes:
        variants[f"upload ({label})"] = uploads(label)
        variants[f"first page ({label})"] = listing(label, late=False)
        variants[f"late page ({label})"] = listing(label, late=True)
    times = interleaved(variants, args.rounds)
    rows = []
    for what in ["upload", "first page", "late page"]:
        small = median(times[f"{what} (small)"])
        large = median(times[f"{what} (large)"])
        rows.append([what, f"{small * 1000:.1f}", f"{large * 1000:.1f}", f"{large / small:.2f}x"])
    table(
        f"Growth: ms per request with {args.small} and {args.large} artifacts in the project "
        f"(and the build), median of {args.rounds} interleaved rounds (goal <= 1.2x)",
        ["request", f"{args.small}", f"{args.large}", "ratio"],
        rows,
    )


if __name__ == "__main__":
    main()
