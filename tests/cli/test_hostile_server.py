"""A hostile or broken server, played by a loopback stub speaking the agreed contract: what
it names must not make `courier` write outside its target, forge log lines or lose bytes."""

import gzip
import os
from contextlib import contextmanager

import pytest

from .conftest import courier
from .stub import file_route, json_body, sha256, stub_server

CONTENT = b"payload\n"


def listing(base: str, paths: list[str], digest: str | None = None) -> dict:
    link = f"{base}/f"
    return {
        "url": f"{base}/listing",
        "expires_at": "2030-01-01T00:00:00Z",
        "key_id": 1,
        "build": {"id": 1, "number": 1, "project": "app"},
        "artifacts": [
            {"path": p, "size": len(CONTENT), "sha256": digest or sha256(CONTENT), "url": link}
            for p in paths
        ],
    }


@contextmanager
def serve_listing(paths, digest=None, body=None):
    """A stub share: its listing names ``paths``, each link answering CONTENT."""
    routes = {("GET", "/f"): file_route(CONTENT, digest)}
    with stub_server(routes) as (base, seen):
        routes[("GET", "/listing")] = lambda h: (200, {}, json_body(body or listing(base, paths)))
        yield base, seen


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize(
    "hostile",
    [
        "../escape.txt",
        "a/../../escape.txt",
        "/tmp/escape.txt",
        "..",
        "a//b",
        "./a",
        "a\\..\\..\\escape.txt",
        "C:/escape.txt",
        "log\nFORGED line",
        "esc\x1b[31mred",
        "",
    ],
)
def test_a_listing_path_that_could_escape_writes_nothing(tmp_path, hostile):
    with serve_listing(["fine.txt", hostile]) as (base, seen):
        target = tmp_path / "target"
        result = courier("download", f"{base}/listing", "-o", str(target))
    assert result.code == 1, result.output
    assert "refusing" in result.stderr
    assert files_under(tmp_path) in ([], ["target"])
    assert not (tmp_path / "target").exists() or files_under(target) == []
    assert [path for method, path, _ in seen if path == "/f"] == []  # no byte fetched


@pytest.mark.parametrize("path", ["link/x.txt", "link/deeper/x.txt"])
def test_a_symlink_in_the_target_does_not_lead_outside(tmp_path, path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "link").symlink_to(outside)
    with serve_listing([path]) as (base, _):
        result = courier("download", f"{base}/listing", "-o", str(target))
    assert result.code == 1
    assert list(outside.iterdir()) == []


def test_a_listing_naming_a_partial_file_is_refused(tmp_path):
    with serve_listing(["x", ".x.courier-part"]) as (base, _):
        result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1
    assert "refusing" in result.stderr


def test_a_build_answer_in_another_shape_is_one_line_not_a_traceback():
    routes = {
        ("POST", "/api/v1/projects/app/builds/"): lambda h: (
            201,
            {},
            json_body({"id": "1\nEVIL=1", "key": {"token": "acb_" + "k" * 40}}),
        )
    }
    with stub_server(routes) as (base, _):
        result = courier(
            "build", "start", "--project", "app", "--ref", "r", "--commit", "c",
            "--format", "env", env={"COURIER_URL": base, "COURIER_TOKEN": "acp_" + "p" * 40},
            reveals_secrets=True,
        )  # fmt: skip
    assert result.code == 1
    assert "EVIL" not in result.stdout
    assert "Traceback" not in result.output


def test_a_share_listing_downloads_all_its_files_without_a_token(tmp_path):
    with serve_listing(["dist/a.txt", "dist/sub/ü b.txt"]) as (base, seen):
        result = courier(
            "download", f"{base}/listing", "-o", str(tmp_path), env={"COURIER_TOKEN": "acb_" * 9}
        )
    assert result.code == 0, result.output
    assert (tmp_path / "dist" / "a.txt").read_bytes() == CONTENT
    assert (tmp_path / "dist" / "sub" / "ü b.txt").read_bytes() == CONTENT
    assert all("Authorization" not in headers for _, _, headers in seen)


def test_a_file_link_downloads_the_file(tmp_path):
    with serve_listing([]) as (base, _):
        result = courier("download", f"{base}/f", "-o", str(tmp_path))
    assert result.code == 0, result.output
    assert (tmp_path / "f").read_bytes() == CONTENT


def test_a_listing_digest_the_bytes_do_not_match_fails_loudly(tmp_path):
    with serve_listing(["a.txt"], digest=sha256(b"something else")) as (base, _):
        result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1
    assert "disagrees" in result.output or "mismatch" in result.output
    assert files_under(tmp_path / "t") == []


def test_a_listing_in_another_shape_is_an_error_not_a_crash(tmp_path):
    with serve_listing([], body={"artifacts": "nope"}) as (base, _):
        result = courier("download", f"{base}/listing", "-o", str(tmp_path))
    assert result.code == 1
    assert "Traceback" not in result.output


def test_uploads_are_retried_on_5xx_and_error_details_are_escaped(tmp_path):
    attempts = {"n": 0}

    def put(handler):
        attempts["n"] += 1
        if attempts["n"] < 3:
            return 503, {}, json_body({"detail": "busy\x1b[2J\nFORGED", "code": "unavailable"})
        digest = handler.headers["X-Checksum-Sha256"]
        assert sha256(handler.body) == digest
        return 201, {}, json_body({"path": "a.txt", "size": len(handler.body), "sha256": digest})

    routes = {
        ("GET", "/api/v1/builds/7/artifacts/"): lambda h: (
            200,
            {},
            json_body({"count": 0, "next": None, "previous": None, "results": []}),
        ),
        ("PUT", "/api/v1/builds/7/artifacts/a.txt"): put,
    }
    (tmp_path / "a.txt").write_bytes(b"abc")
    with stub_server(routes) as (base, _):
        ok = courier(
            "upload", str(tmp_path / "a.txt"), "--retries", "3",
            env={"COURIER_URL": base, "COURIER_TOKEN": "acb_" + "t" * 40, "COURIER_BUILD": "7"},
        )  # fmt: skip
        assert ok.code == 0, ok.output
        assert attempts["n"] == 3
        attempts["n"] = -10  # now it keeps failing
        failed = courier(
            "upload", str(tmp_path / "a.txt"), "--retries", "1",
            env={"COURIER_URL": base, "COURIER_TOKEN": "acb_" + "t" * 40, "COURIER_BUILD": "7"},
        )  # fmt: skip
    assert failed.code == 1
    assert "busy\\x1b[2J\\nFORGED" in failed.output  # shown escaped, not interpreted


def test_the_token_never_follows_a_link_to_another_origin(tmp_path):
    """A service whose next page points elsewhere: courier refuses to send the key there."""
    with stub_server({}) as (other, other_seen):
        routes = {
            ("GET", "/api/v1/builds/7/artifacts/"): lambda h: (
                200,
                {},
                json_body({"count": 2, "next": f"{other}/steal", "previous": None, "results": []}),
            )
        }
        with stub_server(routes) as (base, _):
            result = courier(
                "download", "--build", "7", "-o", str(tmp_path),
                env={"COURIER_URL": base, "COURIER_TOKEN": "acb_" + "t" * 40},
            )  # fmt: skip
    assert result.code == 1
    assert other_seen == []


def test_many_small_files_go_up_as_one_tar_stream(tmp_path):
    """Against the agreed batch contract: POST .../artifacts/batch?prefix=, a tar body,
    201 {"artifacts": [{"path", "size", "sha256"}]}."""
    import io
    import tarfile
    from urllib.parse import parse_qs, urlsplit

    received: list = []

    def batch(handler):
        assert handler.headers["Content-Type"] == "application/x-tar"
        prefix = parse_qs(urlsplit(handler.path).query)["prefix"][0]
        with tarfile.open(fileobj=io.BytesIO(handler.body)) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
        name, manifest = members.pop(0)
        assert name == "SHA256SUMS"
        lines = manifest.decode().splitlines()
        assert sorted(lines) == sorted(f"{sha256(data)}  {name}" for name, data in members)
        received.append((prefix, members))
        answer = [
            {"path": "dist/" + name, "size": len(data), "sha256": sha256(data)}
            for name, data in members
        ]
        return 201, {}, json_body({"artifacts": answer})

    routes = {
        ("GET", "/api/v1/builds/7/artifacts/"): lambda h: (200, {}, json_body({"results": []})),
        ("POST", "/api/v1/builds/7/artifacts/batch"): batch,
    }
    files = {f"sub/ü {i}.txt": f"file {i}\n".encode() * i for i in range(20)}
    for name, data in files.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_bytes(data)
    with stub_server(routes) as (base, seen):
        result = courier(
            "upload", str(tmp_path / "src"), "--prefix", "dist",
            env={"COURIER_URL": base, "COURIER_TOKEN": "acb_" + "t" * 40, "COURIER_BUILD": "7"},
        )  # fmt: skip
    assert result.code == 0, result.output
    assert len(received) == 1
    prefix, members = received[0]
    assert prefix == "dist/"
    assert dict(members) == files
    assert not [path for method, path, _ in seen if method == "PUT"]
    assert result.stdout.startswith("uploaded: 20 uploaded")


def test_a_listing_link_to_another_origin_is_not_fetched(tmp_path):
    with stub_server({("GET", "/f"): file_route(CONTENT)}) as (elsewhere, elsewhere_seen):
        body = {"artifacts": [
            {"path": "a.txt", "size": 8, "sha256": sha256(CONTENT), "url": f"{elsewhere}/f"}
        ]}  # fmt: skip
        with serve_listing([], body=body) as (base, _):
            result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1
    assert "origin" in result.stderr
    assert elsewhere_seen == []


def test_a_failed_download_says_so_once(tmp_path):
    with serve_listing(["a.txt"], digest=sha256(b"something else")) as (base, _):
        result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1
    assert result.stderr.count("FAILED a.txt") == 1, result.stderr


@pytest.mark.parametrize(
    "name", ["..%2F..%2Fescape.txt", "%2Ftmp%2Fescape.txt", "..%5C..%5Cescape.txt", "%2e%2e"]
)
def test_a_file_links_encoded_name_cannot_escape(tmp_path, name):
    """The name a file link's last segment decodes to is checked like a listing's path."""

    class EveryPath(dict):
        def get(self, key, default=None):
            return file_route(CONTENT)

    with stub_server(EveryPath()) as (base, _):
        result = courier("download", f"{base}/dl/{name}", "-o", str(tmp_path / "t"))
    assert result.code == 1, result.output
    assert "refusing" in result.stderr
    assert files_under(tmp_path) in ([], ["t"])


@contextmanager
def serve_pages(pages: list[list[str]], nexts):
    """A stub share listed in pages: page i (``/listing``, then ``/page<i>``) names
    ``pages[i]``; its ``next`` is ``nexts(base)[i]``."""
    routes = {("GET", "/f"): file_route(CONTENT)}
    with stub_server(routes) as (base, seen):
        for i, (paths, following) in enumerate(zip(pages, nexts(base), strict=True)):
            body = {**listing(base, paths), "next": following}
            routes[("GET", "/listing" if i == 0 else f"/page{i}")] = lambda h, body=body: (
                200,
                {},
                json_body(body),
            )
        yield base, seen


def test_a_listing_in_pages_downloads_the_files_of_every_page(tmp_path):
    pages = [["a.txt", "b.txt"], ["c/d.txt"], ["e.txt"]]
    with serve_pages(pages, lambda base: [f"{base}/page1", f"{base}/page2", None]) as (base, _):
        result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 0, result.output
    assert files_under(tmp_path / "t") == ["a.txt", "b.txt", "c", "c/d.txt", "e.txt"]


@pytest.mark.parametrize(
    ("nexts", "said"),
    [
        (lambda base: [f"{base}/page1", f"{base}/listing"], "loop"),
        (lambda base: [f"{base}/page1", f"{base}/page1"], "loop"),
        (lambda base: ["http://127.0.0.2:9/page1", None], "origin"),
        (lambda base: [f"{base}/page1", 7], "origin"),
    ],
    ids=["back-to-the-first", "itself", "another-origin", "not-a-link"],
)
def test_listing_pages_that_loop_or_leave_the_origin_write_nothing(tmp_path, nexts, said):
    with serve_pages([["a.txt"], ["b.txt"]], nexts) as (base, seen):
        result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1, result.output
    assert said in result.stderr
    assert files_under(tmp_path) in ([], ["t"])
    assert all(path != "/f" for _, path, _ in seen)  # no file fetched before the listing is whole


def test_finish_whose_answer_was_lost_is_retried_and_found_done():
    """A proxy's 502 after the service finished the build: the retry's 409 is checked against
    the build's state, which is the one asked for, so the job goes on (exit 0)."""
    attempts = []

    def finish(handler):
        attempts.append(handler.body)
        if len(attempts) == 1:
            return 502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>"
        return 409, {}, json_body({"detail": "already finished", "code": "build_finished"})

    build = {"id": 7, "number": 1, "state": "succeeded", "ref": "r", "commit": "c"}
    routes = {
        ("POST", "/api/v1/builds/7/finish"): finish,
        ("GET", "/api/v1/builds/7/"): lambda h: (200, {}, json_body(build)),
    }
    env = {"COURIER_TOKEN": "acb_" + "t" * 40, "COURIER_BUILD": "7"}
    with stub_server(routes) as (base, _):
        done = courier("build", "finish", "--state", "succeeded", env={**env, "COURIER_URL": base})
        other = courier("build", "finish", "--state", "failed", env={**env, "COURIER_URL": base})
    assert done.code == 0, done.output
    assert "already finished as succeeded" in done.stdout
    assert len(attempts) == 3  # the lost answer, its retry, then the other state's one attempt
    assert other.code == 1
    assert "already finished as succeeded" in other.stderr


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://courier.example:8000", False),
        ("http://10.1.2.3", False),
        ("http://[::1]:9", True),
        ("http://localhost:9", True),
        ("http://127.0.0.2:9", True),
    ],
)
def test_a_token_goes_over_plain_http_only_to_this_machine_unless_allowed(url, allowed):
    """Nothing is connected to: the refusal comes first; a loopback address is refused a
    connection (nothing listens on port 9), which is exit 1, not 2."""
    env = {"COURIER_URL": url, "COURIER_TOKEN": "acb_" + "t" * 40, "COURIER_RETRIES": "0"}
    result = courier("whoami", "--retries", "0", env=env)
    if allowed:
        assert result.code == 1 and "cannot reach" in result.stderr, result.output
    else:
        assert result.code == 2, result.output
        assert "plain http" in result.stderr and "COURIER_ALLOW_HTTP=1" in result.stderr


def test_courier_allow_http_lets_a_token_go_over_plain_http(monkeypatch):
    """The decision alone (connecting would leave the machine)."""
    from courier.client import UsageError, cleartext_check

    with pytest.raises(UsageError):
        cleartext_check("http://courier.example:8000/api/v1/keys/self")
    monkeypatch.setenv("COURIER_ALLOW_HTTP", "1")
    cleartext_check("http://courier.example:8000/api/v1/keys/self")
    cleartext_check("https://courier.example/api/v1/keys/self")


def test_a_listing_link_read_two_ways_is_not_followed(tmp_path):
    """``http://B\\@A/f`` is on A for Python's URL parser and on B for the one requests
    connects with: a listing on A must not send courier to B (an address only the job can
    reach). Both are loopback stubs here."""
    with stub_server({("GET", "/f"): file_route(CONTENT)}) as (elsewhere, reached):
        body = listing("", ["a.txt"])  # its link is set once the listing's origin is known
        with serve_listing([], body=body) as (hostile, _):
            body["artifacts"][0]["url"] = f"{elsewhere}\\@{hostile.removeprefix('http://')}/f"
            result = courier("download", f"{hostile}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1, result.output
    assert "off the listing's origin" in result.stderr
    assert reached == []


@pytest.mark.parametrize(
    "url",
    [
        "http://courier.example\\@127.0.0.1:8000/api/v1/keys/self",
        "http://courier.example\\@localhost/api/v1/keys/self",
        "http://courier.example\\@[::1]/api/v1/keys/self",
    ],
)
def test_a_url_on_another_host_for_requests_is_not_taken_for_loopback(url):
    """requests connects to courier.example for these (a backslash ends its host): the
    decision is made on the host the request goes to (nothing is connected to)."""
    from courier.client import CourierError, cleartext_check, same_origin

    with pytest.raises(CourierError):
        cleartext_check(url)
    assert not same_origin(url, "http://127.0.0.1:8000/")
    assert not same_origin(url, url.replace("courier.example\\@", ""))


@pytest.mark.parametrize(
    ("limits", "said"),
    [
        ({"MAX_LISTING_JSON": 3 * 1024 * 1024}, "larger than courier reads"),
        ({"MAX_PAGES": 5}, "more than 5 pages"),
    ],
    ids=["bytes", "pages"],
)
def test_a_listing_of_endless_pages_is_cut_at_the_listing_budget(monkeypatch, limits, said):
    """Each page within MAX_JSON, each next link new: what the pages add up to is bounded
    (in-process, with the limits lowered; the real ones are 256 MiB and 10,000 pages)."""
    from courier import client as client_module
    from courier.client import Client, Config, CourierError
    from courier.download import link_remotes

    for name, value in limits.items():
        monkeypatch.setattr(client_module, name, value)
    served = []

    class EndlessPages(dict):
        def get(self, key, default=None):
            def page(handler):
                served.append(handler.path)
                number = len(served)
                paths = [f"p{number}/{i:04}-{'x' * 900}" for i in range(1000)]
                body = {**listing(base, paths), "next": f"{base}/page{number}"}
                return 200, {}, json_body(body)

            return page

    with stub_server(EndlessPages()) as (base, _), pytest.raises(CourierError, match=said):
        link_remotes(Client(Config(url="", token=None, retries=0)), f"{base}/listing")
    assert len(served) <= 5


def test_a_partial_file_is_emptied_when_the_server_sends_the_whole_file(tmp_path):
    """A server that ignores Range answers the whole file (200): what the partial file held,
    here more bytes than the file has, is dropped, not left behind the new bytes (they alone
    are hashed, so a stale tail would be kept under a verified name)."""
    target = tmp_path / "target"
    target.mkdir()
    (target / ".x.txt.courier-part").write_bytes(b"stale " * 50)
    with serve_listing(["x.txt"]) as (base, seen):
        result = courier("download", f"{base}/listing", "-o", str(target))
    assert result.code == 0, result.output
    assert [h.get("Range") for _, path, h in seen if path == "/f"] == ["bytes=300-"]
    assert (target / "x.txt").read_bytes() == CONTENT
    assert files_under(target) == ["x.txt"]


@pytest.mark.parametrize("data", [os.urandom(300_000), b"compressible " * 30_000])
def test_a_file_sent_gzip_encoded_though_none_was_asked_for_is_kept(tmp_path, data):
    """Its Content-Length counts the encoded bytes: random bytes come out fewer than were
    sent, which is no cut transfer. The digest is of the file, as decoded."""
    body = gzip.compress(data)
    routes = {
        ("GET", "/f.bin"): lambda h: (
            200,
            {"Content-Encoding": "gzip", "X-Checksum-Sha256": sha256(data)},
            body,
        )
    }
    with stub_server(routes) as (base, _):
        result = courier("download", f"{base}/f.bin", "-o", str(tmp_path))
    assert result.code == 0, result.output
    assert (tmp_path / "f.bin").read_bytes() == data


def test_an_answer_with_two_lengths_is_called_broken_not_a_bad_redirect(tmp_path):
    routes = {("GET", "/f.bin"): lambda h: (200, {"Content-Length": "3"}, CONTENT)}
    with stub_server(routes) as (base, _):
        result = courier("download", f"{base}/f.bin", "-o", str(tmp_path))
    assert result.code == 1
    assert "sent a broken answer (its headers)" in result.output
    assert "redirect" not in result.output
    assert not (tmp_path / "f.bin").exists()


HINT = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"


def interim_then_file(interim: bytes):
    """A file route that sends the raw ``interim`` answers before the file."""

    def route(handler):
        handler.wfile.write(interim)
        handler.wfile.flush()
        return file_route(CONTENT)(handler)

    return route


# At most 20 interim answers: the 20th is still skipped (the final answer is not one).
@pytest.mark.parametrize("count", [1, 3, 20])
def test_early_hints_before_a_file_are_skipped_not_taken_for_the_answer(tmp_path, count):
    routes = {("GET", "/f.bin"): interim_then_file(HINT * count)}
    with stub_server(routes) as (base, _):
        result = courier("download", f"{base}/f.bin", "-o", str(tmp_path))
    assert result.code == 0, result.output
    assert (tmp_path / "f.bin").read_bytes() == CONTENT


def test_endless_interim_answers_are_a_broken_answer(tmp_path):
    routes = {("GET", "/f.bin"): interim_then_file(HINT * 200)}
    with stub_server(routes) as (base, _):
        result = courier("download", f"{base}/f.bin", "-o", str(tmp_path))
    assert result.code == 1
    assert "sent a broken answer" in result.output
    assert not (tmp_path / "f.bin").exists()


def test_interim_answers_are_bounded_even_with_a_100_continue_between_them(tmp_path):
    # http.client's begin() skips a 100 Continue itself and reads the status again: were the
    # count to start afresh there, a 100 after every 19 early hints would make the bound none.
    interim = (HINT * 19 + b"HTTP/1.1 100 Continue\r\n\r\n") * 50  # 1000 interim answers
    routes = {("GET", "/f.bin"): interim_then_file(interim)}
    with stub_server(routes) as (base, _):
        result = courier("download", f"{base}/f.bin", "-o", str(tmp_path), "--retries", "0")
    assert result.code == 1, result.output
    assert f"{base} sent a broken answer (TooManyInterimAnswers)" in result.stderr
    assert not (tmp_path / "f.bin").exists()
