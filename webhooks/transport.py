"""Sending one webhook request: URL rules, auth (basic, SigV4), the guarded connection.

Redirects are never followed (a 3xx is a failed attempt), the connection goes to the address
the SSRF guard checked, and the response is read with a size cap and an overall deadline.
"""

import base64
import contextlib
import re
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import urllib3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from django.conf import settings

from .ssrf import Resolver, Target, TargetRefused, target_resolve

SCHEMES = {"https": "https", "https+sigv4": "https", "http": "http", "http+sigv4": "http"}
# Query parameters that look like credentials: they belong in the credential fields, where
# they are encrypted, not in a URL that ends up in logs.
_SECRET_PARAM = re.compile(
    r"(token|secret|passw|pwd|api[-_]?key|apikey|auth|sig|signature|credential|access[-_]?key|"
    r"session|^key$|^code$)",
    re.IGNORECASE,
)


class InvalidTargetUrl(ValueError):
    def __init__(self, message: str, code: str = "invalid_url") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str  # what is sent: http or https
    sigv4: bool
    host: str
    port: int
    path: str  # path + query, as sent
    netloc: str  # Host header

    @property
    def sent_url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"


def url_parse(url: str) -> ParsedUrl:
    """Validate a subscription's target URL; raise InvalidTargetUrl saying what is wrong."""
    if len(url) > 2000 or re.search(r"[\x00-\x20\x7f]", url):
        raise InvalidTargetUrl("The URL is too long or contains spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise InvalidTargetUrl(f"Not a valid URL: {error}.") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise InvalidTargetUrl("The URL must start with https:// or https+sigv4://.")
    if SCHEMES[scheme] == "http" and not settings.WEBHOOK_ALLOW_HTTP:
        raise InvalidTargetUrl(
            "Plain http targets are not allowed here: use https.", code="https_required"
        )
    if "@" in parts.netloc:
        raise InvalidTargetUrl(
            "Credentials in the URL (user:password@) are not accepted: use the basic_auth or "
            "sigv4 fields, which are stored encrypted and kept out of logs.",
            code="credentials_in_url",
        )
    names = {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    suspicious = sorted(name for name in names if _SECRET_PARAM.search(name))
    if suspicious:
        raise InvalidTargetUrl(
            f"The query string looks like it carries a secret ({', '.join(suspicious)}): put "
            "credentials in the basic_auth or sigv4 fields, not in the URL.",
            code="credentials_in_url",
        )
    if parts.fragment:
        raise InvalidTargetUrl("The URL may not have a #fragment.")
    host = parts.hostname
    if not host:
        raise InvalidTargetUrl("The URL has no host.")
    try:
        # International domain names go on the wire as IDNA (RFC 5891); the rest of the URL
        # must already be ASCII (percent-encoded), as it is sent byte for byte and signed so.
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidTargetUrl("The URL's host is not a valid domain name.") from None
    if not (parts.path + parts.query).isascii():
        raise InvalidTargetUrl("Percent-encode non-ASCII characters in the URL's path and query.")
    send_scheme = SCHEMES[scheme]
    port = port or (443 if send_scheme == "https" else 80)
    default = (send_scheme == "https" and port == 443) or (send_scheme == "http" and port == 80)
    host_header = f"[{host}]" if ":" in host else host
    netloc = host_header if default else f"{host_header}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ParsedUrl(send_scheme, scheme.endswith("+sigv4"), host, port, path, netloc)


@dataclass(frozen=True)
class SigV4:
    access_key_id: str
    secret_access_key: str
    region: str
    service: str


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    body: bytes
    retry_after: float | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def sigv4_sign(*, url: ParsedUrl, headers: dict, body: bytes, creds: SigV4) -> dict:
    """Headers with AWS SigV4 added by botocore's own signer, over the exact body bytes."""
    request = AWSRequest(method="POST", url=url.sent_url, data=body, headers=dict(headers))
    SigV4Auth(
        Credentials(creds.access_key_id, creds.secret_access_key), creds.service, creds.region
    ).add_auth(request)
    return dict(request.headers.items())


def basic_auth_header(username: str, password: str) -> str:
    # RFC 7617: base64 of user-id ":" password, in UTF-8.
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _retry_after(value: str | None) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds (ASCII digits only) or an HTTP-date; anything else is
    ignored, never an error: a receiver's malformed header must not turn its 2xx into a failed
    attempt (and a resend)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Capped before conversion (int() refuses thousands of digits): a 400-digit value
        # means "as long as allowed".
        cap = settings.WEBHOOK_RETRY_AFTER_MAX_SECONDS
        digits = value.lstrip("0") or "0"
        return float(cap if len(digits) > 12 else min(int(digits), cap))
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None
    except (TypeError, ValueError, OverflowError, IndexError, AttributeError):
        return None


class _Deadline:
    """Cuts an attempt's sockets at its overall deadline. The connect and read timeouts bound
    each wait; a receiver sending one byte now and then (headers or body) never hits them and
    would hold a worker until the task's hard time limit kills it, unrecorded and retried
    forever. Shutting the socket down from a timer unblocks whatever read is in progress."""

    def __init__(self, seconds: float) -> None:
        self.sockets: list[socket.socket] = []
        self.expired = False
        self.seconds = seconds
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self._expire)
        self.timer.daemon = True

    def track(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                self._shutdown(sock)

    def _expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _pool(url: ParsedUrl, target: Target, deadline: _Deadline):
    timeout = urllib3.Timeout(
        connect=settings.WEBHOOK_CONNECT_TIMEOUT, read=settings.WEBHOOK_READ_TIMEOUT
    )
    address = str(target.address)
    if url.scheme == "https":
        # Connect to the checked address; TLS still verifies the certificate for the host name.
        pool = urllib3.HTTPSConnectionPool(
            address,
            url.port,
            timeout=timeout,
            retries=False,
            server_hostname=url.host,
            assert_hostname=url.host,
            cert_reqs="CERT_REQUIRED",
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, url.port, timeout=timeout, retries=False)

    class Watched(pool.ConnectionCls):
        def _new_conn(self):
            sock = super()._new_conn()
            deadline.track(sock)
            return sock

    pool.ConnectionCls = Watched
    return pool


def post(
    *,
    url: ParsedUrl,
    headers: dict,
    body: bytes,
    sigv4: SigV4 | None = None,
    resolve: Resolver | None = None,
) -> Outcome:
    """POST ``body`` to ``url`` once. Never raises for network trouble: the outcome says."""
    started = time.monotonic()

    def done(status=None, content=b"", retry_after=None, error="") -> Outcome:
        elapsed = int((time.monotonic() - started) * 1000)
        return Outcome(status, content, retry_after, error[:500], elapsed)

    try:
        target = target_resolve(url.host, url.port, **({"resolve": resolve} if resolve else {}))
    except TargetRefused as refused:
        return done(error=f"refused: {refused}")
    headers = {**headers, "Host": url.netloc}
    if sigv4 is not None:
        headers = sigv4_sign(url=url, headers=headers, body=body, creds=sigv4)
    deadline = _Deadline(settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_READ_TIMEOUT)
    pool = _pool(url, target, deadline)
    deadline.timer.start()
    try:
        response = pool.urlopen(
            "POST",
            url.path,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            content = _read_capped(response, started)
        finally:
            response.release_conn()
        if deadline.expired:
            raise TimeoutError("cut short")
        return done(response.status, content, _retry_after(response.headers.get("Retry-After")))
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
        # Network trouble, a malformed answer, an unencodable header: a failed attempt.
        if deadline.expired:
            return done(error=f"no complete answer within the {deadline.seconds:g}s deadline")
        return done(error=f"{type(error).__name__}: {error}")
    finally:
        deadline.timer.cancel()
        pool.close()


def _read_capped(response, started: float) -> bytes:
    """At most WEBHOOK_RESPONSE_MAX_BYTES, within the read timeout overall (not per chunk)."""
    cap = settings.WEBHOOK_RESPONSE_MAX_BYTES
    deadline = started + settings.WEBHOOK_CONNECT_TIMEOUT + settings.WEBHOOK_READ_TIMEOUT
    chunks, size = [], 0
    while size < cap and time.monotonic() < deadline:
        chunk = response.read(min(16384, cap - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
