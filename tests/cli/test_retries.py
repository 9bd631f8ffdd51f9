"""When `courier` asks again. A POST that creates something (a build, a share, a key) may
have been acted on by the service when a proxy in front answers 502/503/504: asking again
would create a second one. It is asked again only when the answer proves nothing was done."""

import pytest

from .conftest import courier
from .stub import json_body, stub_server

TOKEN = "acp_" + "p" * 40
BUILD = {
    "id": 7,
    "number": 1,
    "project": "app",
    "state": "running",
    "key": {"id": 3, "token": "acb_" + "b" * 40, "scopes": ["artifacts:write"]},
}
SHARE = {"url": "http://h/dl/builds/7/?sig=x", "expires_at": "e", "key_id": 4, "artifacts": []}
KEY = {"id": 5, "token": "acd_" + "d" * 40, "scopes": ["artifacts:read"], "expires_at": "e"}

COMMANDS = {
    "build start": (
        ("POST", "/api/v1/projects/app/builds/"),
        ["build", "start", "--project", "app", "--ref", "r", "--commit", "c"],
        BUILD,
    ),
    "share": (("POST", "/api/v1/builds/7/share"), ["share", "--build", "7"], SHARE),
    "key derive": (("POST", "/api/v1/keys/"), ["key", "derive", "--expires", "1h"], KEY),
}

# What a proxy in front of the service answers when the service went away mid-request (it
# may have committed first): nothing in it proves the request was not acted on.
AMBIGUOUS = [
    (502, {}, b"<html>Bad Gateway</html>"),
    (503, {}, b"<html>Service Unavailable</html>"),
    (504, {}, b"<html>Gateway Timeout</html>"),
    (500, {}, json_body({"detail": "Internal server error.", "code": "server_error"})),
    # A Retry-After alone, on a proxy's own page, proves nothing either.
    (503, {"Retry-After": "1", "Content-Type": "text/html"}, b"<html>down</html>"),
]
# The service's own refusals, made before acting: a dependency down ("nothing was changed"),
# or throttled.
REFUSED_BEFORE_ACTING = [
    (503, {"Retry-After": "0"}, json_body({"detail": "down", "code": "unavailable"})),
    (429, {"Retry-After": "0"}, json_body({"detail": "slow down", "code": "throttled"})),
]


def run(command: str, first_answer):
    route, args, created = COMMANDS[command]
    posts = []

    def answer(handler):
        posts.append(handler.body)
        if len(posts) == 1:
            return first_answer
        return 201, {}, json_body(created)

    with stub_server({route: answer}) as (base, _):
        result = courier(*args, "--retries", "3", env={"COURIER_URL": base, "COURIER_TOKEN": TOKEN})
    return result, posts


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("first_answer", AMBIGUOUS, ids=lambda a: f"{a[0]}{sorted(a[1])}")
def test_a_creating_post_is_not_sent_twice_after_an_ambiguous_answer(command, first_answer):
    result, posts = run(command, first_answer)
    assert len(posts) == 1, f"{command} was sent {len(posts)} times"
    assert result.code == 1, result.output
    assert f"HTTP {first_answer[0]}" in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("first_answer", REFUSED_BEFORE_ACTING, ids=lambda a: str(a[0]))
def test_a_creating_post_the_service_refused_before_acting_is_retried(command, first_answer):
    result, posts = run(command, first_answer)
    assert len(posts) == 2
    assert result.code == 0, result.output


# -- exit codes when some files fail ---------------------------------------------------------

UPLOADER = {"COURIER_TOKEN": "acb_" + "b" * 40, "COURIER_BUILD": "7"}


def empty_listing(h):
    return 200, {}, json_body({"next": None, "results": []})


@pytest.mark.parametrize(("status", "code"), [(401, 3), (403, 3), (404, 4)])
def test_an_upload_refused_for_every_file_exits_with_the_refusals_code(tmp_path, status, code):
    """A key revoked (or expired) during a run: the job learns it is the credentials (3),
    as the documented table says, not a transfer failure (1)."""
    refusal = json_body({"detail": "refused", "code": "x"})
    routes = {
        ("GET", "/api/v1/builds/7/artifacts/"): empty_listing,
        ("PUT", "/api/v1/builds/7/artifacts/a.txt"): lambda h: (status, {}, refusal),
        ("PUT", "/api/v1/builds/7/artifacts/b.txt"): lambda h: (status, {}, refusal),
    }
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(name.encode())
    with stub_server(routes) as (base, _):
        result = courier(
            "upload", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"),
            env={"COURIER_URL": base, **UPLOADER},
        )  # fmt: skip
    assert result.code == code, result.output


def test_failures_of_different_kinds_exit_1(tmp_path):
    def put(h):
        digest = h.headers["X-Checksum-Sha256"]
        return 201, {}, json_body({"path": "b.txt", "size": 1, "sha256": digest})

    routes = {
        ("GET", "/api/v1/builds/7/artifacts/"): empty_listing,
        ("PUT", "/api/v1/builds/7/artifacts/a.txt"): lambda h: (
            403, {}, json_body({"detail": "refused", "code": "x"}),
        ),
        ("PUT", "/api/v1/builds/7/artifacts/b.txt"): lambda h: (
            507, {}, json_body({"detail": "full", "code": "storage_full"}),
        ),
        ("PUT", "/api/v1/builds/7/artifacts/c.txt"): put,
    }  # fmt: skip
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_bytes(name.encode())
    with stub_server(routes) as (base, _):
        result = courier(
            "upload", *(str(tmp_path / n) for n in ("a.txt", "b.txt", "c.txt")),
            env={"COURIER_URL": base, **UPLOADER},
        )  # fmt: skip
    assert result.code == 1, result.output


def test_a_download_refused_for_every_file_exits_3(tmp_path):
    sha = "a" * 64
    items = [{"path": n, "size": 1, "sha256": sha} for n in ("a.txt", "b.txt")]
    refusal = json_body({"detail": "revoked", "code": "revoked"})
    routes = {
        ("GET", "/api/v1/builds/7/artifacts/"): lambda h: (
            200, {}, json_body({"next": None, "results": items}),
        ),
        ("GET", "/api/v1/builds/7/artifacts/a.txt"): lambda h: (401, {}, refusal),
        ("GET", "/api/v1/builds/7/artifacts/b.txt"): lambda h: (401, {}, refusal),
    }  # fmt: skip
    with stub_server(routes) as (base, _):
        result = courier(
            "download", "--build", "7", "-o", str(tmp_path),
            env={"COURIER_URL": base, "COURIER_TOKEN": "acb_" + "b" * 40},
        )  # fmt: skip
    assert result.code == 3, result.output
