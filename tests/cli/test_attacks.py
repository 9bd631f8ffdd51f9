"""An outsider's attacks on `courier`: a hostile or broken server (or whoever sits on a plain
http link), a hostile local tree, concurrent runs, what ends up in a CI log."""

import os
import socket
import subprocess
import threading
import unicodedata
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import COURIER, courier
from .stub import answering_server, file_route, json_body, sha256, stub_server
from .test_hostile_server import CONTENT, files_under, listing, serve_listing

TOKEN = "acb_" + "t" * 40
EMPTY_SHA = sha256(b"").encode()


@contextmanager
def raw_server(handle):
    """A loopback server whose GET handler is ``handle(handler)``: it writes what it likes."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            handle(self)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def one_listing(base: str, path: str, data: bytes, size: int | None = None) -> bytes:
    return json_body(
        {
            "artifacts": [
                {"path": path, "size": size if size is not None else len(data),
                 "sha256": sha256(data), "url": f"{base}/f"}
            ]
        }
    )  # fmt: skip


# -- the target directory -----------------------------------------------------------------


def test_a_partial_file_name_that_is_a_symlink_is_not_written_through(tmp_path):
    """A symlink already sitting where courier keeps its partial file must not make it write
    (or resume) outside the target, nor end up as the downloaded file."""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    target = tmp_path / "t"
    target.mkdir()
    (target / ".a.txt.courier-part").symlink_to(outside)
    with serve_listing(["a.txt"]) as (base, _):
        result = courier("download", f"{base}/listing", "-o", str(target))
    assert outside.read_bytes() == b"precious"
    assert not (target / "a.txt").is_symlink()
    assert result.code == 1, result.output
    assert "refusing" in result.stderr


def test_two_runs_into_one_directory_do_not_trip_over_each_other(tmp_path):
    """Two jobs downloading the same file into one directory at once (a shared cache): both
    succeed and the file is whole, whoever finishes first."""
    data = os.urandom(256 * 1024)
    first_waiting, second_done = threading.Event(), threading.Event()
    calls = {"n": 0}
    lock = threading.Lock()

    def handle(h):
        if h.path == "/listing":
            body = one_listing(base, "big.bin", data)
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        with lock:
            calls["n"] += 1
            first = calls["n"] == 1
        h.send_response(200)  # Range or not: the whole file
        h.send_header("Content-Length", str(len(data)))
        h.send_header("X-Checksum-Sha256", sha256(data))
        h.end_headers()
        if first:
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            first_waiting.set()
            second_done.wait(60)
            h.wfile.write(data[len(data) // 2 :])
        else:
            h.wfile.write(data)

    with raw_server(handle) as base:
        env = {"PATH": os.environ["PATH"], "COURIER_RETRIES": "0"}
        args = [str(COURIER), "download", f"{base}/listing", "-o", str(tmp_path)]
        first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert first_waiting.wait(60)
        second = courier("download", f"{base}/listing", "-o", str(tmp_path))
        second_done.set()
        out, err = first.communicate(timeout=120)
    assert second.code == 0, second.output
    assert first.returncode == 0, (out + err).decode()
    assert b"Traceback" not in err
    assert (tmp_path / "big.bin").read_bytes() == data
    assert files_under(tmp_path) == ["big.bin"]


def test_a_body_longer_than_the_listed_size_is_cut_off(tmp_path):
    """A server that never stops sending must not fill the disk: the listing said 8 bytes."""
    sent = {"n": 0}

    def handle(h):
        if h.path == "/listing":
            body = one_listing(base, "a.txt", CONTENT)
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        h.send_response(200)
        h.send_header("X-Checksum-Sha256", sha256(CONTENT))
        h.send_header("Connection", "close")
        h.end_headers()
        chunk = b"x" * 65536
        try:
            while sent["n"] < 256 * 1024 * 1024:
                h.wfile.write(chunk)
                sent["n"] += len(chunk)
        except OSError:
            pass

    with raw_server(handle) as base:
        result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1
    assert "more bytes than" in result.stderr
    assert files_under(tmp_path / "t") == []
    assert sent["n"] < 128 * 1024 * 1024


@pytest.mark.parametrize(
    "names",
    [
        ["README.md", "readme.md"],  # one file on macOS and Windows
        [unicodedata.normalize("NFC", "é.txt"), unicodedata.normalize("NFD", "é.txt")],
        ["Docs/a.txt", "docs"],  # a folder and a file, once case is folded
    ],
)
def test_names_that_collide_once_normalised_are_refused(tmp_path, names):
    with serve_listing(names) as (base, seen):
        result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1, result.output
    assert "twice" in result.stderr or "file and folder" in result.stderr
    assert [p for _, p, _ in seen if p == "/f"] == []


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path):
    with serve_listing(["a" * 250, "d" * 300 + "/x"]) as (base, _):
        result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1
    assert "Traceback" not in result.output
    assert result.stderr.count("\n") <= 3


# -- the service's answers ----------------------------------------------------------------


def test_a_next_cursor_pointing_to_itself_does_not_loop_forever(tmp_path):
    def page(h):
        path = "/api/v1/builds/7/artifacts/?cursor=same"
        return 200, {}, json_body({"next": f"http://{h.headers['Host']}{path}", "results": []})

    routes = {("GET", "/api/v1/builds/7/artifacts/"): page}
    with stub_server(routes) as (base, seen):
        result = courier(
            "download", "--build", "7", "-o", str(tmp_path),
            env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN}, timeout=60,
        )  # fmt: skip
    assert result.code == 1
    assert "loop" in result.stderr
    assert len(seen) < 10


def test_a_body_cut_short_is_one_line_not_a_traceback():
    def handle(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b'{"id": 1, ')
        h.wfile.flush()
        h.close_connection = True

    with raw_server(handle) as base:
        result = courier("whoami", env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN})
    assert result.code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith("courier: error:")


def test_a_redirect_loop_is_one_line_not_a_traceback(tmp_path):
    def handle(h):
        h.send_response(302)
        h.send_header("Location", "/x?sig=SECRETSIG")
        h.send_header("Content-Length", "0")
        h.end_headers()

    with raw_server(handle) as base:
        result = courier("download", f"{base}/x?sig=SECRETSIG", "-o", str(tmp_path))
    assert result.code == 1
    assert "Traceback" not in result.output
    assert "SECRETSIG" not in result.output


@pytest.mark.parametrize(
    "link",
    ["http://127.0.0.1:70000/x?sig=SECRETSIG", "http://[::1/x?sig=SECRETSIG"],
)
def test_a_malformed_link_is_a_usage_error_that_does_not_echo_its_signature(tmp_path, link):
    result = courier("download", link, "-o", str(tmp_path))
    assert result.code == 2, result.output
    assert "SECRETSIG" not in result.output


def test_a_tls_error_exits_1_without_the_signature(tmp_path):
    with serve_listing(["a.txt"]) as (base, _):
        link = base.replace("http://", "https://") + "/listing?sig=SECRETSIG"
        result = courier("download", link, "-o", str(tmp_path), "--retries", "0")
    assert result.code == 1
    assert "cannot reach" in result.stderr
    assert "SECRETSIG" not in result.output


def test_the_token_echoed_back_by_a_server_is_not_printed():
    routes = {
        ("GET", "/api/v1/keys/self"): lambda h: (
            401,
            {},
            json_body({"detail": f"bad key {h.headers['Authorization']}", "code": "x"}),
        )
    }
    with stub_server(routes) as (base, _):
        result = courier("whoami", env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN})
    assert result.code == 3
    assert "bad key" in result.stderr  # courier() checks the token is not in it


def test_the_token_does_not_follow_a_redirect_to_another_origin(tmp_path):
    with stub_server({("GET", "/f"): file_route(CONTENT)}) as (other, other_seen):
        items = listing(other, ["a.txt"])["artifacts"]
        routes = {
            ("GET", "/api/v1/builds/7/artifacts/"): lambda h: (
                200, {}, json_body({"next": None, "results": items}),
            ),
            ("GET", "/api/v1/builds/7/artifacts/a.txt"): lambda h: (
                302, {"Location": f"{other}/f", "X-Checksum-Sha256": sha256(CONTENT)}, b"",
            ),
        }  # fmt: skip
        with stub_server(routes) as (base, _):
            # Another origin as near as it gets: the same host, another port.
            assert base.split(":")[1] == other.split(":")[1]
            result = courier(
                "download", "--build", "7", "-o", str(tmp_path),
                env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN},
            )  # fmt: skip
    assert result.code == 0, result.output
    assert (tmp_path / "a.txt").read_bytes() == CONTENT
    assert [h.get("Authorization") for _, _, h in other_seen] == [None]


@pytest.mark.parametrize("text", ["\u202eevil", "line\u2028break", "nel\x85x"])
def test_json_output_holds_no_invisible_or_line_breaking_characters(text):
    routes = {("GET", "/api/v1/keys/self"): lambda h: (200, {}, json_body({"name": text}))}
    with stub_server(routes) as (base, _):
        result = courier("whoami", "--json", env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN})
    assert result.code == 0  # courier() checks for control characters


@pytest.mark.parametrize("path", ["::add-mask::x", "  ::stop-commands::x", "##[set-env name=A;]1"])
def test_a_server_string_cannot_start_a_workflow_command_line(path):
    share = {"url": "u", "expires_at": "e", "key_id": 1, "artifacts": [{"path": path, "url": "u"}]}
    routes = {("POST", "/api/v1/builds/7/share"): lambda h: (201, {}, json_body(share))}
    with stub_server(routes) as (base, _):
        result = courier("share", "--build", "7", env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN})
    assert result.code == 0, result.output
    for line in result.output.splitlines():
        assert not line.lstrip().startswith(("::", "##[")), line


# -- the local tree -----------------------------------------------------------------------


def test_a_fifo_in_an_uploaded_directory_does_not_hang(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"a")
    os.mkfifo(tmp_path / "d" / "pipe")
    routes = {("GET", "/api/v1/builds/7/artifacts/"): lambda h: (200, {}, json_body([]))}
    with stub_server(routes) as (base, seen):
        result = courier(
            "upload", str(tmp_path / "d"), timeout=60,
            env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN, "COURIER_BUILD": "7"},
        )  # fmt: skip
    assert result.code == 2
    assert "pipe" in result.stderr
    assert [m for m, _, _ in seen if m != "GET"] == []


def test_a_symlink_loop_in_an_uploaded_directory_ends(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"a")
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")

    def put(h):
        digest = h.headers["X-Checksum-Sha256"]
        return 201, {}, json_body({"path": "a.txt", "size": 1, "sha256": digest})

    routes = {
        ("GET", "/api/v1/builds/7/artifacts/"): lambda h: (200, {}, json_body([])),
        ("PUT", "/api/v1/builds/7/artifacts/a.txt"): put,
    }
    with stub_server(routes) as (base, _):
        result = courier(
            "upload", str(tmp_path / "d"), timeout=60,
            env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN, "COURIER_BUILD": "7"},
        )  # fmt: skip
    assert result.code == 0, result.output


def test_a_connection_refused_mid_run_is_exit_1_not_a_hang():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = courier(
        "whoami", "--retries", "0",
        env={"COURIER_URL": f"http://127.0.0.1:{port}", "COURIER_TOKEN": TOKEN},
    )  # fmt: skip
    assert result.code == 1
    assert "connection refused" in result.stderr


def test_a_symlink_out_of_an_uploaded_directory_is_refused(tmp_path):
    """A checked-out tree (a pull request's) with `docs/leak -> ~/.ssh/id_rsa` must not ship
    the runner's files to the build; a link inside the tree is fine."""
    (tmp_path / "secret").write_bytes(b"runner's key")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_bytes(b"a")
    (tmp_path / "d" / "inside").symlink_to(tmp_path / "d" / "a.txt")
    (tmp_path / "d" / "leak").symlink_to(tmp_path / "secret")
    routes = {("GET", "/api/v1/builds/7/artifacts/"): lambda h: (200, {}, json_body([]))}
    with stub_server(routes) as (base, seen):
        result = courier(
            "upload", str(tmp_path / "d"),
            env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN, "COURIER_BUILD": "7"},
        )  # fmt: skip
    assert result.code == 2, result.output
    assert "leak" in result.stderr
    assert [m for m, _, _ in seen if m != "GET"] == []


def test_share_links_signatures_are_masked_on_github_actions():
    sig = "s1gnature-" + "x" * 30
    share = {
        "url": f"http://h/dl/builds/7/?exp=1&kid=2&sig={sig}",
        "expires_at": "e",
        "key_id": 2,
        "artifacts": [{"path": "a", "url": f"http://h/dl/builds/7/a?exp=1&kid=2&sig={sig}b"}],
    }
    routes = {("POST", "/api/v1/builds/7/share"): lambda h: (201, {}, json_body(share))}
    with stub_server(routes) as (base, _):
        env = {"COURIER_URL": base, "COURIER_TOKEN": TOKEN, "GITHUB_ACTIONS": "true"}
        result = courier("share", "--build", "7", env=env)
        hostile = {**share, "url": "http://h/?sig=x%0A::set-output%20name=a::b"}
        routes[("POST", "/api/v1/builds/7/share")] = lambda h: (201, {}, json_body(hostile))
        injected = courier("share", "--build", "7", env=env)
    assert result.code == 0, result.output
    assert f"::add-mask::{sig}\n" in result.stderr
    assert f"::add-mask::{sig}b\n" in result.stderr
    assert injected.code == 0, injected.output
    assert not [line for line in injected.output.splitlines() if "::set-output" in line[:20]]


def test_a_downloaded_file_gets_the_usual_permissions(tmp_path):
    """The run's own partial file (created 0600) becomes the artifact: it gets the mode a
    file created the ordinary way gets (0666 less the umask)."""
    previous = os.umask(0o022)  # the run inherits it
    try:
        with serve_listing(["a.txt"]) as (base, _):
            result = courier("download", f"{base}/listing", "-o", str(tmp_path))
    finally:
        os.umask(previous)
    assert result.code == 0, result.output
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


# -- answers of any size, cut anywhere ------------------------------------------------------


def endless(h, start: bytes, sent: dict, content_type="application/json") -> None:
    """An answer that never ends (no length, the connection closed when the client gives up)."""
    h.send_response(200 if h.command == "GET" else 201)
    h.send_header("Content-Type", content_type)
    h.send_header("Connection", "close")
    h.end_headers()
    h.close_connection = True
    try:
        h.wfile.write(start)
        chunk = b" " * 65536
        while sent["n"] < 256 * 1024 * 1024:
            h.wfile.write(chunk)
            sent["n"] += len(chunk)
    except OSError:
        pass


def test_an_endless_listing_behind_a_link_is_cut_off(tmp_path):
    sent = {"n": 0}
    with raw_server(lambda h: endless(h, b'{"artifacts": [', sent)) as base:
        result = courier("download", f"{base}/listing", "-o", str(tmp_path / "t"))
    assert result.code == 1
    assert "more JSON than expected" in result.stderr
    assert sent["n"] < 128 * 1024 * 1024


def test_a_listing_behind_a_link_cut_short_is_one_line_not_a_traceback(tmp_path):
    def handle(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b'{"artifacts": [')
        h.wfile.flush()
        h.close_connection = True

    with raw_server(handle) as base:
        result = courier("download", f"{base}/listing?sig=SECRETSIG", "-o", str(tmp_path))
    assert result.code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith("courier: error:")
    assert "SECRETSIG" not in result.output


def test_an_endless_answer_to_an_upload_is_cut_off(tmp_path):
    """The service's answer to a PUT is a small JSON document: one that never ends must not
    be read into memory whole."""
    sent = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            body = json_body({"next": None, "results": []})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            endless(self, b'{"path": "a.txt", "sha256": "', sent)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "a.txt").write_bytes(b"abc")
    try:
        result = courier(
            "upload", str(tmp_path / "a.txt"),
            env={"COURIER_URL": f"http://127.0.0.1:{server.server_address[1]}",
                 "COURIER_TOKEN": TOKEN, "COURIER_BUILD": "7"},
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.code == 1
    assert "more JSON than expected" in result.output
    assert sent["n"] < 128 * 1024 * 1024


def test_an_endless_redirect_body_is_not_read_whole(tmp_path):
    """requests reads a redirect's body before following it: one that never ends must not be
    read into memory."""
    sent = {"n": 0}

    def handle(h):
        if h.path.startswith("/f"):
            h.send_response(200)
            h.send_header("Content-Length", str(len(CONTENT)))
            h.send_header("X-Checksum-Sha256", sha256(CONTENT))
            h.end_headers()
            h.wfile.write(CONTENT)
            return
        h.send_response(302)
        h.send_header("Location", "/f")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        chunk = b"x" * 65536
        try:
            while sent["n"] < 256 * 1024 * 1024:
                h.wfile.write(chunk)
                sent["n"] += len(chunk)
        except OSError:
            pass

    with raw_server(handle) as base:
        result = courier("download", f"{base}/redirect/a.txt", "-o", str(tmp_path))
    assert sent["n"] < 128 * 1024 * 1024
    assert result.code == 0, result.output
    assert (tmp_path / "a.txt").read_bytes() == CONTENT


def test_a_digest_from_where_a_link_redirects_does_not_override_the_links_own(tmp_path):
    """The service answers a link with a redirect carrying the file's digest (to the object
    store). Whatever answers at the end of the redirect (an object store on plain http, or
    anyone on its way) must not substitute bytes of its own with a digest of their own."""
    other = b"substituted bytes\n"
    with stub_server({("GET", "/g"): file_route(other)}) as (store, _):
        redirect = {("GET", "/f"): lambda h: (
            302, {"Location": f"{store}/g", "X-Checksum-Sha256": sha256(CONTENT)}, b"",
        )}  # fmt: skip
        with stub_server(redirect) as (base, _):
            result = courier("download", f"{base}/f", "-o", str(tmp_path))
    assert result.code == 1, result.output
    assert "disagree" in result.stderr
    assert files_under(tmp_path) == []


# -- credentials that are not courier's -----------------------------------------------------


def netrc_home(tmp_path, host="127.0.0.1"):
    """A HOME whose ~/.netrc holds credentials for ``host`` (CI runners often have one)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine {host} login runner password netrc-secret\n")
    (home / ".netrc").chmod(0o600)
    return str(home)


def test_a_netrc_entry_does_not_replace_the_token(tmp_path):
    routes = {
        ("GET", "/api/v1/keys/self"): lambda h: (
            (200, {}, json_body({"id": 1, "kind": "build"}))
            if h.headers.get("Authorization") == f"Bearer {TOKEN}"
            else (401, {}, json_body({"detail": "no", "code": "not_authenticated"}))
        )
    }
    with stub_server(routes) as (base, _):
        result = courier(
            "whoami",
            env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN, "HOME": netrc_home(tmp_path)},
        )
    assert result.code == 0, result.output


def test_a_redirect_gets_no_netrc_credentials(tmp_path):
    """A server redirecting a download to a host of the runner's ~/.netrc (over plain http,
    say) must not make courier send that host's credentials."""
    with stub_server({("GET", "/f"): file_route(CONTENT)}) as (other, other_seen):
        redirect = {("GET", "/a.txt"): lambda h: (302, {"Location": f"{other}/f"}, b"")}
        with stub_server(redirect) as (base, seen):
            result = courier(
                "download", f"{base}/a.txt", "-o", str(tmp_path / "t"),
                env={"HOME": netrc_home(tmp_path)},
            )  # fmt: skip
    assert result.code == 0, result.output
    assert other_seen and seen
    assert [h.get("Authorization") for _, _, h in seen + other_seen if "Authorization" in h] == []


def test_hidden_files_of_an_uploaded_directory_stay_behind_unless_asked_for(tmp_path):
    """A checked-out workspace holds `.git/config`, where the CI's checkout keeps its token
    (actions/checkout's extraheader), and often a `.env`: uploading the directory must not
    ship them to a build whose artifacts may be shared. --include-hidden sends them."""
    tree = tmp_path / "ws"
    (tree / ".git").mkdir(parents=True)
    (tree / ".git" / "config").write_text("extraheader = AUTHORIZATION: basic c2VjcmV0\n")
    (tree / ".env").write_text("API_KEY=secret\n")
    (tree / "sub" / ".cache").mkdir(parents=True)
    (tree / "sub" / ".cache" / "x").write_text("x")
    (tree / "sub" / "a.txt").write_text("a")
    put_paths = []

    def put(h):
        put_paths.append(h.path)
        digest = h.headers["X-Checksum-Sha256"]
        return 201, {}, json_body({"path": h.path, "size": len(h.body), "sha256": digest})

    routes = {("GET", "/api/v1/builds/7/artifacts/"): lambda h: (200, {}, json_body([]))}
    for name in (".git/config", ".env", "sub/.cache/x", "sub/a.txt"):
        routes[("PUT", f"/api/v1/builds/7/artifacts/{name}")] = put
    env = {"COURIER_TOKEN": TOKEN, "COURIER_BUILD": "7"}
    with stub_server(routes) as (base, _):
        plain = courier("upload", str(tree), env={"COURIER_URL": base, **env})
        sent_plain = sorted(put_paths)
        put_paths.clear()
        hidden = courier("upload", str(tree), "--include-hidden", env={"COURIER_URL": base, **env})
    assert plain.code == 0, plain.output
    assert sent_plain == ["/api/v1/builds/7/artifacts/sub/a.txt"]
    assert "3 hidden files" in plain.stderr and "--include-hidden" in plain.stderr
    assert hidden.code == 0, hidden.output
    assert len(put_paths) == 4


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: y\r\n" * 101 + b"\r\n",
        b"HTTP/1.1 103 Early Hints\r\n" + b"X-Many: y\r\n" * 101 + b"\r\n",
        # Heads cut short: whatever they held so far must not pass for a whole answer.
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Checksum-Sha256: " + EMPTY_SHA + b"\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Checksum-Sha256: " + EMPTY_SHA + b"\r\nX-Ot",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=pre",
    ],
    ids=[
        "no-status-line",
        "a-header-too-long",
        "too-many-headers",
        "an-interim-too-long",
        "a-status-line-alone",
        "a-head-without-its-blank-line",
        "a-head-cut-mid-line",
        "an-interim-cut-mid-line",
    ],
)
def test_an_answer_that_is_not_http_is_a_broken_answer_not_an_unreachable_server(tmp_path, answer):
    with answering_server(answer) as (base, _):
        result = courier("download", f"{base}/f.bin", "-o", str(tmp_path), "--retries", "0")
    assert result.code == 1
    assert f"{base} sent a broken answer" in result.stderr, result.output
    assert "cannot reach" not in result.output and "aaaa" not in result.output
    assert files_under(tmp_path) == []


def test_a_proxy_that_answers_garbage_is_not_blamed_on_the_service(tmp_path):
    # The origin was never reached: the proxy answered CONNECT with what is not HTTP. Saying
    # "https://artifacts.example.com sent a broken answer" sends the user after the service.
    with answering_server(b"garbage\r\n\r\n") as (proxy, seen):
        result = courier(
            "download",
            "https://artifacts.example.com/f.bin",
            "-o",
            str(tmp_path),
            "--retries",
            "0",
            env={"HTTPS_PROXY": proxy},
        )
    assert seen and seen[0].startswith(b"CONNECT artifacts.example.com:443")
    assert result.code == 1
    assert "artifacts.example.com sent a broken answer" not in result.stderr, result.output
    assert "proxy" in result.stderr.lower(), result.output
    assert files_under(tmp_path) == []


def test_a_server_that_closes_after_an_interim_answer_was_reached(tmp_path):
    # It answered (103 Early Hints), then closed before its final answer: a broken answer,
    # not "cannot reach" (which sends the user after DNS, firewalls, the service being down).
    answer = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    with answering_server(answer) as (base, seen):
        result = courier("download", f"{base}/f.bin", "-o", str(tmp_path), "--retries", "0")
    assert len(seen) == 1
    assert result.code == 1
    assert f"{base} sent a broken answer" in result.stderr, result.output
    assert "cannot reach" not in result.output
    assert files_under(tmp_path) == []
