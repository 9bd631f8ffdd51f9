"""The reference receiver (examples/receiver/) run as a local process: deliveries signed with
the `standardwebhooks` library itself, artifacts behind pre-signed links, statuses posted
back with the delivery's status token."""

import base64
import json
import os
import re
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook

from devtools.servers import stop

from .conftest import ROOT
from .stub import file_route, json_body, sha256, stub_server

SECRET = "whsec_" + base64.b64encode(b"receiver-test-secret-0123456789ab").decode()
STATUS_TOKEN = "acx_" + "s" * 40
CONTENT = b"artifact bytes\n"


@contextmanager
def receiver(**env):
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "receiver" / "handler.py"), "--port", "0"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        yield f"http://127.0.0.1:{match.group(1)}/"
    finally:
        stop(proc)


def signed(payload: dict, secret: str = SECRET, *, at: datetime | None = None):
    body = json.dumps(payload)
    msg_id = f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, at, body)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }
    return body, headers


def payload(base: str, artifacts: list[dict]) -> dict:
    return {
        "type": "build.succeeded",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "project": "app",
            "build": {"id": 7, "number": 1, "ref": "refs/heads/main", "commit": "ab" * 20},
            "artifacts": artifacts,
            "listing_url": f"{base}/listing",
            "links_expire_at": "2030-01-01T00:00:00Z",
            "status_url": f"{base}/api/v1/builds/7/statuses/",
            "status_token": STATUS_TOKEN,
        },
    }


@contextmanager
def downstream_world(digest: str | None = None):
    """A stub service: one artifact link and the statuses endpoint (the agreed contract)."""
    statuses: list = []

    def post_status(handler):
        statuses.append((handler.headers.get("Authorization"), json.loads(handler.body)))
        return 201, {}, json_body(json.loads(handler.body))

    routes = {
        ("GET", "/f"): file_route(CONTENT, digest),
        ("POST", "/api/v1/builds/7/statuses/"): post_status,
    }
    with stub_server(routes) as (base, seen):
        link = f"{base}/f"
        artifacts = [
            {"path": "dist/app.txt", "size": len(CONTENT), "sha256": sha256(CONTENT), "url": link}
        ]
        yield base, artifacts, statuses, seen


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_signed_delivery_is_fetched_verified_and_reported():
    with (
        downstream_world() as (base, artifacts, statuses, _),
        receiver(
            WEBHOOK_SECRET=SECRET, COURIER_URL=base, RECEIVER_COMMAND="cat dist/app.txt"
        ) as url,
    ):
        body, headers = signed(payload(base, artifacts))
        answer = requests.post(url, data=body, headers=headers, timeout=30)
        assert answer.status_code == 202, answer.text
        assert wait_for(lambda: len(statuses) >= 2)
    assert [s["state"] for _, s in statuses] == ["pending", "success"]
    assert {auth for auth, _ in statuses} == {f"Bearer {STATUS_TOKEN}"}
    assert statuses[0][1]["context"] == "downstream/receiver"


@pytest.mark.parametrize(
    "tamper",
    ["body", "secret", "stale", "missing", "garbage"],
)
def test_a_delivery_that_fails_verification_does_nothing(tamper):
    with (
        downstream_world() as (base, artifacts, statuses, seen),
        receiver(WEBHOOK_SECRET=SECRET, COURIER_URL=base) as url,
    ):
        body, headers = signed(payload(base, artifacts))
        if tamper == "body":
            body = body.replace("refs/heads/main", "refs/heads/evil")
        elif tamper == "secret":
            other = "whsec_" + base64.b64encode(b"another-secret-entirely-0123456").decode()
            body, headers = signed(payload(base, artifacts), other)
        elif tamper == "stale":
            body, headers = signed(
                payload(base, artifacts), at=datetime.now(UTC) - timedelta(hours=1)
            )
        elif tamper == "missing":
            del headers["webhook-signature"]
        else:
            headers["webhook-signature"] = "no-comma-here"
        answer = requests.post(url, data=body, headers=headers, timeout=30)
        assert answer.status_code == 401
        time.sleep(0.5)
    assert statuses == []
    assert [path for _, path, _ in seen] == []


def test_an_unconfigured_receiver_refuses_every_delivery():
    with downstream_world() as (base, artifacts, statuses, _), receiver() as url:
        body, headers = signed(payload(base, artifacts))
        env_free = {k: v for k, v in headers.items()}
        answer = requests.post(url, data=body, headers=env_free, timeout=30)
    assert answer.status_code == 503
    assert statuses == []


def test_an_artifact_whose_bytes_do_not_match_reports_failure():
    with (
        downstream_world(digest=sha256(b"other")) as (base, artifacts, statuses, _),
        receiver(WEBHOOK_SECRET=SECRET, COURIER_URL=base) as url,
    ):
        body, headers = signed(payload(base, artifacts))
        assert requests.post(url, data=body, headers=headers, timeout=30).status_code == 202
        assert wait_for(lambda: len(statuses) >= 2)
    assert [s["state"] for _, s in statuses] == ["pending", "failure"]
    assert "failed" in statuses[1][1]["description"]


def test_a_status_url_off_the_pinned_service_gets_no_token():
    with (
        downstream_world() as (base, artifacts, statuses, _),
        receiver(WEBHOOK_SECRET=SECRET, COURIER_URL="http://127.0.0.1:1") as url,
    ):
        body, headers = signed(payload(base, artifacts))
        answer = requests.post(url, data=body, headers=headers, timeout=30)
    assert answer.status_code == 400
    assert statuses == []


@pytest.mark.slow
def test_the_cloudformation_template_is_valid():
    lint = ROOT / ".venv" / "bin" / "cfn-lint"
    if not lint.exists():
        lint = os.path.join(os.path.dirname(sys.executable), "cfn-lint")
    result = subprocess.run(
        [str(lint), "--ignore-checks", "W3002", "--", "examples/receiver/template.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_artifact_link_off_the_pinned_service_is_not_fetched():
    with (
        downstream_world() as (base, artifacts, statuses, seen),
        receiver(WEBHOOK_SECRET=SECRET, COURIER_URL=base) as url,
    ):
        artifacts[0]["url"] = "http://127.0.0.1:1/elsewhere"
        body, headers = signed(payload(base, artifacts))
        answer = requests.post(url, data=body, headers=headers, timeout=30)
    assert answer.status_code == 400
    assert statuses == [] and seen == []


def test_a_receiver_without_courier_url_refuses_every_delivery():
    """Without the service's origin pinned, a delivery (signed, or merely allowed through IAM)
    could point the status token and the downloads anywhere: fail closed."""
    with (
        downstream_world() as (base, artifacts, statuses, seen),
        receiver(WEBHOOK_SECRET=SECRET) as url,
    ):
        body, headers = signed(payload(base, artifacts))
        answer = requests.post(url, data=body, headers=headers, timeout=30)
        time.sleep(0.5)
    assert answer.status_code == 503
    assert "COURIER_URL" in answer.text
    assert statuses == [] and seen == []


def test_a_replayed_delivery_is_not_acted_on_twice():
    with (
        downstream_world() as (base, artifacts, statuses, seen),
        receiver(WEBHOOK_SECRET=SECRET, COURIER_URL=base) as url,
    ):
        body, headers = signed(payload(base, artifacts))
        first = requests.post(url, data=body, headers=headers, timeout=30)
        assert wait_for(lambda: len(statuses) >= 2)
        again = requests.post(url, data=body, headers=headers, timeout=30)
        time.sleep(0.5)
    assert first.status_code == 202
    assert again.status_code == 200 and again.json() == {"duplicate": True}
    assert [s["state"] for _, s in statuses] == ["pending", "success"]
    assert [path for _, path, _ in seen if path == "/f"] == ["/f"]


@pytest.mark.parametrize("length", ["-1", "abc", "1e9"])
def test_a_bad_content_length_is_refused_without_reading_the_body(length):
    import socket

    with receiver(WEBHOOK_SECRET=SECRET, COURIER_URL="http://127.0.0.1:1") as url:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
                + b"x" * 4096  # and the connection stays open: an endless body
            )
            answer = sock.recv(4096)
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer


def test_the_command_gets_neither_the_webhook_secret_nor_cloud_credentials(tmp_path):
    """RECEIVER_COMMAND runs on a build's artifacts (a pull request's tests, say): with the
    webhook secret it could forge deliveries, with the function's AWS credentials invoke
    it. It gets a plain environment, and the variables RECEIVER_COMMAND_ENV names."""
    seen, peeked = tmp_path / "env.txt", tmp_path / "parent-env.txt"
    with (
        downstream_world() as (base, artifacts, statuses, _),
        receiver(
            WEBHOOK_SECRET=SECRET,
            COURIER_URL=base,
            AWS_SECRET_ACCESS_KEY="aws-secret-never-for-the-command",
            AWS_SESSION_TOKEN="aws-session-never-for-the-command",
            OPERATOR_SETTING="for-the-command",
            RECEIVER_COMMAND_ENV="OPERATOR_SETTING",
            # ... nor by reading ours from /proc (the same user may, unless we forbid it).
            RECEIVER_COMMAND=f"sh -c 'env > {seen}; cat /proc/$PPID/environ > {peeked}'",
        ) as url,
    ):
        body, headers = signed(payload(base, artifacts))
        assert requests.post(url, data=body, headers=headers, timeout=30).status_code == 202
        assert wait_for(lambda: len(statuses) >= 2)
    assert [s["state"] for _, s in statuses] == ["pending", "success"]
    env = seen.read_text()
    assert "PATH=" in env
    assert "OPERATOR_SETTING=for-the-command" in env
    # Root reads any process's environment: that part is checked when the suite runs
    # unprivileged (as CI does), and the mechanism by the test below in any case.
    parent = peeked.read_bytes().decode(errors="replace") if os.geteuid() else ""
    for secret in (SECRET, "aws-secret-never-for-the-command", "aws-session-never-for-the-command"):
        assert secret not in env
        assert secret not in parent
    assert STATUS_TOKEN not in env


def test_the_receiver_keeps_commands_of_its_user_out_of_its_memory():
    """A command runs as the receiver's user, who may read a process's environment and memory
    (/proc/PID/environ, /proc/PID/mem, ptrace) unless it is not dumpable: the receiver makes
    itself so before it runs one (Linux)."""
    script = (
        "import ctypes, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'examples' / 'receiver')!r})\n"
        "import handler\n"
        "handler.keep_commands_out()\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"  # PR_GET_DUMPABLE
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_the_commands_output_is_not_held_in_memory():
    """What the command prints (a test suite on a build's artifacts can print a lot) goes to
    the receiver's log as it comes, not into its memory."""
    with (
        downstream_world() as (base, artifacts, statuses, _),
        receiver(
            WEBHOOK_SECRET=SECRET,
            COURIER_URL=base,
            RECEIVER_COMMAND="head -c 400000000 /dev/zero",
        ) as url,
    ):
        body, headers = signed(payload(base, artifacts))
        assert requests.post(url, data=body, headers=headers, timeout=30).status_code == 202
        assert wait_for(lambda: len(statuses) >= 2, timeout=60)
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        peak = _peak_memory_kib(port)
    assert [s["state"] for _, s in statuses] == ["pending", "success"]
    assert peak < 200 * 1024, f"the receiver peaked at {peak} KiB"


def _peak_memory_kib(port: int) -> int:
    """The peak resident memory (VmHWM) of the process listening on ``port``."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inode = fields[9]
    assert inode
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            for fd in fds:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    status = Path(f"/proc/{pid}/status").read_text()
                    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
        except OSError:
            continue
    raise AssertionError("no process listens on the port")


@pytest.mark.parametrize("drip", [False, True])
def test_a_caller_that_sends_slowly_or_not_at_all_is_cut_off(drip):
    """Locally the receiver is a threaded HTTP server: a connection that sends nothing (or a
    byte now and then) must not hold a thread for ever; many would exhaust the process."""
    import socket

    with receiver(
        WEBHOOK_SECRET=SECRET, COURIER_URL="http://127.0.0.1:1", RECEIVER_READ_TIMEOUT="2"
    ) as url:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            started = time.monotonic()
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            answer = b"?"
            while time.monotonic() - started < 20:
                if drip:
                    try:
                        sock.sendall(b"X")
                    except OSError:
                        answer = b""
                        break
                sock.settimeout(0.5)
                try:
                    answer = sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    answer = b""
                break
            took = time.monotonic() - started
    assert answer == b"" or answer.startswith(b"HTTP/1.0 408"), answer
    assert took < 10


def test_a_truncated_payloads_listing_off_the_pinned_service_is_not_fetched():
    with (
        downstream_world() as (base, artifacts, statuses, seen),
        receiver(WEBHOOK_SECRET=SECRET, COURIER_URL=base) as url,
    ):
        body = payload(base, artifacts)
        body["data"]["artifacts_truncated"] = True
        body["data"]["listing_url"] = "http://127.0.0.1:1/elsewhere/"
        data, headers = signed(body)
        answer = requests.post(url, data=data, headers=headers, timeout=30)
    assert answer.status_code == 400
    assert statuses == [] and seen == []
