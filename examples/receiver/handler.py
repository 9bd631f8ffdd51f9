"""A reference downstream receiver for artifactcourier webhooks.

Runs as an AWS Lambda function behind a function URL (`lambda_handler`), or locally
(`python handler.py --port 8080`). For each delivery of a finished build it:

1. verifies the delivery: its Standard Webhooks signature (`webhook-id`, `webhook-timestamp`,
   `webhook-signature`, with `WEBHOOK_SECRET` = the subscription's `whsec_...` secret), or,
   when the function URL uses IAM auth and the subscription is `https+sigv4://...`, relies on
   AWS having checked the SigV4 signature before invoking us (`RECEIVER_AUTH=iam`). With
   neither configured, or without `COURIER_URL` (the service's origin: the status URL and
   every artifact link must be on it), it refuses every delivery (fail closed); a delivery
   id accepted before (a replay) is not acted on again;
2. reports `pending` on the build with the delivery's `status_token` (build:status only);
3. fetches the artifacts through the payload's pre-signed links (every page of its
   listing_url when the payload lists only the first, `artifacts_truncated`), each verified
   against its SHA-256, into a fresh directory (paths that would leave it are refused);
4. runs its own work (`RECEIVER_COMMAND`, run in that directory with a plain environment:
   not the webhook secret nor the function's credentials, only the variables named in
   `RECEIVER_COMMAND_ENV`; without one it only checks the files arrived) and reports
   `success` or `failure`.

The delivery is answered (202) as soon as it is verified and `pending` is posted, so a slow
job never makes the service retry: locally the work goes on in a thread; on Lambda the
function invokes itself asynchronously with the verified payload.

Requirements: `artifactcourier-cli` (the `courier` package: downloads with verification) and
`standardwebhooks`; see requirements.txt.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from courier.client import Client, Config, CourierError, same_origin
from courier.download import download, link_remotes, remotes_from_listing
from courier.output import Reporter

log = logging.getLogger("receiver")
EVENTS = ("build.succeeded", "build.failed")
CONTEXT = os.environ.get("RECEIVER_CONTEXT", "downstream/receiver")
MAX_BODY = 1024 * 1024
# Standard Webhooks refuses timestamps more than 5 minutes away: a delivery id seen within
# twice that is a replay (the service's retries of a delivery we refused are not: an id is
# only remembered once accepted).
REPLAY_WINDOW = 600
_accepted: dict[str, float] = {}
_accepted_lock = threading.Lock()


@dataclass
class Delivery:
    build_id: int
    status_url: str
    status_token: str
    artifacts: list
    payload: dict
    # The payload lists the first artifacts only (artifacts_truncated): the listing has them all.
    listing_url: str | None = None


class Rejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def verify(headers: dict[str, str], body: bytes) -> dict:
    """The delivery's payload once its origin is established; Rejected otherwise."""
    if len(body) > MAX_BODY:
        raise Rejected(413, "delivery too large")
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if secret:
        try:
            # Standard Webhooks: HMAC-SHA256 over "id.timestamp.body", timestamps older or
            # newer than 5 minutes refused (replays).
            payload = Webhook(secret).verify(body, headers)
        except Exception:  # the library raises more than its own error on malformed headers
            raise Rejected(401, "signature verification failed") from None
    elif os.environ.get("RECEIVER_AUTH") == "iam":
        # Function URL with AuthType AWS_IAM: Lambda has verified the caller's SigV4
        # signature and its permission to invoke before we run.
        try:
            payload = json.loads(body)
        except ValueError:
            raise Rejected(400, "not JSON") from None
    else:
        raise Rejected(503, "receiver not configured: set WEBHOOK_SECRET or RECEIVER_AUTH=iam")
    if not os.environ.get("COURIER_URL"):
        # The payload names where to send the status token and what to fetch: without the
        # service's origin to hold it to, any verified caller could point them anywhere.
        raise Rejected(503, "receiver not configured: set COURIER_URL")
    if not isinstance(payload, dict):
        raise Rejected(400, "unexpected payload")
    return payload


def parse(payload: dict) -> Delivery | None:
    """The parts of a build event we act on; None for events we ignore."""
    if payload.get("type") not in EVENTS:
        return None
    data = payload.get("data")
    try:
        build_id = int(data["build"]["id"])
        status_url, status_token = data["status_url"], data["status_token"]
        artifacts = data.get("artifacts") or []
    except (KeyError, TypeError, ValueError):
        raise Rejected(400, "payload without build, status_url or status_token") from None
    if not isinstance(status_url, str) or urlsplit(status_url).scheme not in ("http", "https"):
        raise Rejected(400, "status_url is not an http(s) URL")
    pinned = os.environ.get("COURIER_URL", "")
    if not same_origin(status_url, pinned):
        # Even a signed payload only gets our status token sent to the service we know.
        raise Rejected(400, "status_url is not on COURIER_URL")
    listing_url = data.get("listing_url") if data.get("artifacts_truncated") is True else None
    links = [a.get("url") for a in artifacts if isinstance(a, dict)]
    if listing_url is not None:
        links.append(listing_url)
    if not all(isinstance(u, str) and same_origin(u, pinned) for u in links):
        # ... and makes us fetch nothing but the service's own links.
        raise Rejected(400, "an artifact link is not on COURIER_URL")
    return Delivery(build_id, status_url, str(status_token), artifacts, payload, listing_url)


def report(delivery: Delivery, state: str, description: str) -> None:
    client = Client(Config(url=delivery.status_url, token=delivery.status_token, retries=3))
    client.post_json(
        delivery.status_url,
        {"context": CONTEXT, "state": state, "description": description[:140]},
        idempotent=True,  # the latest status per context wins: sending twice is harmless
    )


# What RECEIVER_COMMAND's environment holds of ours: enough to run a program. Not the
# webhook secret (it could forge deliveries), not the function's AWS credentials (it could
# invoke the function, or whatever its role allows), nothing else we were given.
COMMAND_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def command_env() -> dict[str, str]:
    """The environment RECEIVER_COMMAND runs with: COMMAND_ENV, and the variables the
    operator names in RECEIVER_COMMAND_ENV (comma-separated) for the command's own use."""
    names = [*COMMAND_ENV, *os.environ.get("RECEIVER_COMMAND_ENV", "").split(",")]
    return {name: os.environ[name] for name in map(str.strip, names) if name in os.environ}


def keep_commands_out() -> None:
    """A command runs as our user, who may read a process's environment and memory
    (/proc/PID/environ, /proc/PID/mem, ptrace): our environment holds the webhook secret and
    the function's credentials. Linux refuses all of them to other processes of the user
    once this one is not dumpable (prctl PR_SET_DUMPABLE 0)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        log.warning("could not make the receiver non-dumpable: a command may read its secrets")


def _log_fd() -> int:
    """Our stderr's descriptor (the function's log), or nowhere if it has none."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL


def work(delivery: Delivery) -> None:
    """Fetch, run, report. Never raises: every outcome ends as a status on the build."""
    try:
        with tempfile.TemporaryDirectory(prefix="receiver-") as tmp:
            root = Path(tmp)
            client = Client(Config(url="", token=None, retries=3))
            if delivery.listing_url is not None:
                # More files than a payload lists: every page of the listing, each file's link
                # on the listing's origin (checked by link_remotes).
                remotes = link_remotes(client, delivery.listing_url)
            else:
                remotes = remotes_from_listing(
                    delivery.artifacts, make_url=lambda item: item["url"]
                )
            outcomes = download(
                client=client, remotes=remotes, root=root, jobs=4, reporter=Reporter(quiet=True)
            )
            failed = [o for o in outcomes if o.status == "failed"]
            if failed:
                report(delivery, "failure", f"{len(failed)} artifacts failed: {failed[0].error}")
                return
            command = os.environ.get("RECEIVER_COMMAND")
            if command:
                # Its output goes to our log as it comes (never held in memory), and it gets
                # a plain environment (see command_env) and no look at ours.
                keep_commands_out()
                result = subprocess.run(  # noqa: S603 (the operator's own command)
                    shlex.split(command),
                    cwd=root,
                    env=command_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=_log_fd(),
                    stderr=_log_fd(),
                    timeout=600,
                )
                ok = result.returncode == 0
                description = f"{command.split()[0]} exited {result.returncode}"
            else:
                ok, description = True, f"{len(outcomes)} artifacts fetched and verified"
            report(delivery, "success" if ok else "failure", description)
    except Exception as exc:
        log.exception("delivery for build %s failed", delivery.build_id)
        try:
            report(delivery, "error", f"receiver error: {exc}"[:140])
        except CourierError:
            log.exception("could not report the error")


def _claim_delivery(msg_id: str) -> bool:
    """False if this delivery id was accepted within the replay window (per process: on
    Lambda, per warm instance; the status token is bound to one build either way)."""
    now = time.monotonic()
    with _accepted_lock:
        for seen, at in list(_accepted.items()):
            if now - at > REPLAY_WINDOW:
                del _accepted[seen]
        if msg_id in _accepted:
            return False
        _accepted[msg_id] = now
        return True


def _release_delivery(msg_id: str) -> None:
    with _accepted_lock:
        _accepted.pop(msg_id, None)


def handle(headers: dict[str, str], body: bytes, *, start) -> tuple[int, dict]:
    """One delivery: verify, report pending, hand the work to ``start``; (status, body)."""
    try:
        delivery = parse(verify(headers, body))
    except Rejected as exc:
        return exc.status, {"error": str(exc)}
    if delivery is None:
        return 200, {"ignored": True}
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id") or ""
    if msg_id and not _claim_delivery(msg_id):
        return 200, {"duplicate": True}
    try:
        report(delivery, "pending", "artifacts received, job starting")
    except CourierError as exc:
        # 502: the service will retry the delivery; nothing has started yet.
        _release_delivery(msg_id)
        return 502, {"error": f"could not report pending: {exc}"}
    start(delivery)
    return 202, {"build": delivery.build_id, "state": "pending"}


# -- AWS Lambda (function URL) ------------------------------------------------------------


def _start_async_lambda(delivery: Delivery) -> None:
    import boto3  # in the Lambda runtime

    boto3.client("lambda").invoke(
        FunctionName=os.environ["AWS_LAMBDA_FUNCTION_NAME"],
        InvocationType="Event",
        Payload=json.dumps({"receiver_job": delivery.payload}).encode(),
    )


def lambda_handler(event: dict, context) -> dict:
    if "receiver_job" in event:  # our own asynchronous invocation: already verified
        delivery = parse(event["receiver_job"])
        if delivery is not None:
            work(delivery)
        return {"done": True}
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    status, answer = handle(event.get("headers") or {}, raw, start=_start_async_lambda)
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(answer),
    }


# -- locally ------------------------------------------------------------------------------


def serve(port: int, host: str = "127.0.0.1") -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    read_timeout = float(os.environ.get("RECEIVER_READ_TIMEOUT", "30"))

    class Handler(BaseHTTPRequestHandler):
        # A caller has this long to send its whole request (head and body): one that sends
        # nothing, or a byte now and then, would otherwise hold a thread for ever.
        timeout = read_timeout

        def setup(self) -> None:
            super().setup()
            self.deadline = threading.Timer(read_timeout, self._cut)
            self.deadline.daemon = True
            self.deadline.start()

        def _cut(self) -> None:
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def finish(self) -> None:
            self.deadline.cancel()
            super().finish()

        def do_POST(self) -> None:
            declared = self.headers.get("Content-Length") or "0"
            if not declared.isdigit() or not declared.isascii():
                # "-1" would read until the caller hangs up: as much as it cares to send.
                self.close_connection = True
                self.send_error(400)
                return
            length = int(declared)
            if length > MAX_BODY:
                self.close_connection = True
                self.send_error(413)
                return
            body = self.rfile.read(length)
            self.deadline.cancel()  # read in time: answering may take longer
            if len(body) < length:
                self.close_connection = True
                return
            status, answer = handle(
                dict(self.headers.items()),
                body,
                start=lambda d: threading.Thread(target=work, args=(d,)).start(),
            )
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args) -> None:
            log.info("%s " + fmt, self.address_string(), *args)

    server = ThreadingHTTPServer((host, port), Handler)
    print(f"receiver listening on http://{host}:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    import argparse

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    parser = argparse.ArgumentParser(description="artifactcourier webhook receiver (local)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    serve(args.port, args.host)
