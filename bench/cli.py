"""`courier upload` / `courier download` against curl doing the same requests one after
another, on loopback against gunicorn.

Two sets: many small files (default 200 x 1 MiB) and a few large ones (default 4 x 256 MiB).
The baseline is the naive CI script: a shell loop of one `curl` per file (the PUT with its
`X-Checksum-Sha256` from `sha256sum`, as the same PUT needs it; the GET with `-o`, verifying
nothing, while courier verifies every digest). The goal is against that plain GET loop; the
row "download+check" adds what a script verifying its download spends in `sha256sum -c`,
for the comparison of like with like. courier
is timed as a whole process: hashing, the listing it checks for files already there, its
parallel transfers (`--jobs`, default 4) and, for downloads, verifying every digest.

Every round uploads into a fresh build; variants alternate order round by round and medians
are reported as ratios (curl time / courier time: above 1 means courier is faster).
Options: --rounds N (default 5: on a shared 2-core machine one round's 1 GiB download can take
a third longer than the next, so a median needs several), --small N, --small-mib N, --large N,
--large-mib N, --jobs N.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import median, table
from devtools.servers import manage, start_gunicorn, stop

MiB = 1024 * 1024
COURIER = Path(sys.executable).parent / "courier"


def write_files(root: Path, count: int, size: int) -> dict[str, str]:
    root.mkdir(parents=True)
    digests = {}
    for i in range(count):
        data = os.urandom(size)
        name = f"f{i:04}.bin"
        (root / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def new_build(url: str, project_token: str) -> tuple[str, str]:
    request = urllib.request.Request(
        f"{url}/api/v1/projects/bench/builds/",
        data=json.dumps({"ref": "refs/heads/main", "commit": "0" * 40}).encode(),
        headers={"Authorization": f"Bearer {project_token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        build = json.load(response)
    return str(build["id"]), build["key"]["token"]


def timed(fn) -> float:
    os.sync()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def curl_uploads(url, build, token, src: Path, digests: dict[str, str]) -> None:
    """What a CI script does: `curl -T f -H "X-Checksum-Sha256: $(sha256sum f)"` per file."""
    for name in digests:
        digest = subprocess.run(
            ["sha256sum", str(src / name)], check=True, capture_output=True, text=True
        ).stdout[:64]
        subprocess.run(
            [
                "curl", "-sSf", "-o", "/dev/null", "-H", "Expect:",
                "-H", f"Authorization: Bearer {token}",
                "-H", f"X-Checksum-Sha256: {digest}",
                "-T", str(src / name),
                f"{url}/api/v1/builds/{build}/artifacts/{name}",
            ],
            check=True,
        )  # fmt: skip


def curl_downloads(url, build, token, names, out: Path) -> None:
    out.mkdir(parents=True)
    for name in names:
        subprocess.run(
            [
                "curl", "-sSf", "-H", f"Authorization: Bearer {token}",
                "-o", str(out / name), f"{url}/api/v1/builds/{build}/artifacts/{name}",
            ],
            check=True,
        )  # fmt: skip


def sha256_check(out: Path, digests: dict[str, str]) -> None:
    """What a CI script verifying its download runs: `sha256sum -c` over the files."""
    sums = "".join(f"{digest}  {name}\n" for name, digest in digests.items())
    if not sums:  # --small 0: sha256sum -c refuses an empty list
        return
    subprocess.run(
        ["sha256sum", "--quiet", "-c", "-"],
        input=sums.encode(),
        cwd=out,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def courier(url, build, token, *args: str) -> None:
    env = {**os.environ, "COURIER_URL": url, "COURIER_TOKEN": token, "COURIER_BUILD": build}
    subprocess.run(
        [str(COURIER), *args, "--progress", "none"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_once(tool, url, project_token, src, digests, work, jobs) -> tuple[float, float, float]:
    """Upload ``src`` into a fresh build and download it again with ``tool``: the seconds, and
    for curl those of checking the download with sha256sum (courier checks as it downloads)."""
    build, token = new_build(url, project_token)
    out = work / f"out-{tool}"
    check = 0.0
    if tool == "curl":
        up = timed(lambda: curl_uploads(url, build, token, src, digests))
        down = timed(lambda: curl_downloads(url, build, token, list(digests), out))
        check = timed(lambda: sha256_check(out, digests))
    else:
        up = timed(lambda: courier(url, build, token, "upload", str(src), "--jobs", str(jobs)))
        down = timed(
            lambda: courier(
                url, build, token, "download", "--build", build, "-o", str(out), "--jobs", str(jobs)
            )
        )
    shutil.rmtree(out)
    return up, down, check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--small-mib", type=float, default=1)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    if not shutil.which("curl"):
        sys.exit("bench/cli.py needs curl")

    work = Path(tempfile.mkdtemp(prefix="ac-bench-cli-"))
    try:
        env = {**os.environ, "AC_DATA_DIR": str(work / "server"), "STORAGE_BACKEND": "filesystem"}
        env.pop("DATABASE_URL", None)
        manage(env, "migrate", "--noinput")
        project_token = manage(env, "create_project", "bench").strip().splitlines()[-1]
        proc, port = start_gunicorn(
            env, "--workers", "2", "--worker-class", "gthread", "--threads", "8",
            "--timeout", "300",
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        sets = {
            f"{args.small} x {args.small_mib:g} MiB": write_files(
                work / "small", args.small, int(args.small_mib * MiB)
            ),
            f"{args.large} x {args.large_mib} MiB": write_files(
                work / "large", args.large, args.large_mib * MiB
            ),
        }
        dirs = dict(zip(sets, [work / "small", work / "large"], strict=True))
        times: dict[tuple[str, str], list[float]] = {}
        try:
            for r in range(args.rounds):
                for label, digests in sets.items():
                    src = dirs[label]
                    order = ["curl", "courier"] if r % 2 == 0 else ["courier", "curl"]
                    for tool in order:
                        up, down, check = run_once(
                            tool, url, project_token, src, digests, work, args.jobs
                        )
                        times.setdefault((label, f"upload {tool}"), []).append(up)
                        times.setdefault((label, f"download {tool}"), []).append(down)
                        times.setdefault((label, f"download+check {tool}"), []).append(down + check)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            stop(proc)

        rows = []
        for label, digests in sets.items():
            total = sum((dirs[label] / n).stat().st_size for n in digests) / MiB
            for op in ("upload", "download", "download+check"):
                c, k = median(times[(label, f"{op} curl")]), median(times[(label, f"{op} courier")])
                rows.append(
                    [
                        label, op, f"{c:.2f}", f"{k:.2f}", f"{total / c:.0f}", f"{total / k:.0f}",
                        f"{c / k:.2f}x",
                    ]
                )  # fmt: skip
        table(
            f"courier vs. sequential curl, medians of {args.rounds} rounds "
            f"(courier --jobs {args.jobs}; ratio = curl time / courier time, > 1 is faster)",
            ["files", "op", "curl s", "courier s", "curl MiB/s", "courier MiB/s", "ratio"],
            rows,
        )
        print(
            "goals: >= 1.5x on the small files, >= 0.9x on the large ones (upload, download; "
            "download+check is shown for information)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
