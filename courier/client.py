"""The HTTP side of the CLI: one place that knows the base URL, the token, retries and how an
API error becomes an exit code. Talks to the service over HTTP only."""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.auth import AuthBase
from urllib3.util import parse_url

from . import __version__, pace

# Exit codes (documented in `courier --help` and docs/ci.md).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4

# Worth another try: throttled, or the service (or a proxy in front) failing for now. Not 501
# (never gets better) nor 507 (a full store stays full within a run).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# The service's 503 codes for a request it refused before acting (a dependency down: "nothing
# was changed"). A proxy's 502/503/504 proves nothing: the service may have acted first.
REFUSED_BEFORE_ACTING = frozenset({"unavailable"})
# A JSON answer larger than this is not the service's (a page holds at most 1000 artifacts).
MAX_JSON = 64 * 1024 * 1024
# A redirect's body is a line of HTML at most: more of it than this is not read.
MAX_REDIRECT_BODY = 64 * 1024
# Pages of one listing followed at most (1000 artifacts each).
MAX_PAGES = 10_000
# JSON read for one listing, all its pages together: a build's 100,000 files take about 30 MiB.
# A hostile server's pages, each within MAX_JSON, must not add up to more than memory holds.
MAX_LISTING_JSON = 256 * 1024 * 1024


class ListingBudget:
    """What one listing may still read, across its pages (MAX_LISTING_JSON bytes, MAX_PAGES
    pages), and the pages it has read, so a next link that comes back is a loop."""

    def __init__(self) -> None:
        self.left = MAX_LISTING_JSON
        self.seen: set[str] = set()

    def page(self, url: str) -> None:
        """Before reading the page at ``url``."""
        if url in self.seen:
            raise CourierError("the listing's pages loop (a next link seen before)")
        if len(self.seen) >= MAX_PAGES:
            raise CourierError(f"the listing has more than {MAX_PAGES} pages")
        self.seen.add(url)

    def charge(self, size: int, origin: str) -> None:
        self.left -= size
        if self.left < 0:
            raise CourierError(
                f"{origin} answered a listing larger than courier reads "
                f"({MAX_LISTING_JSON // (1024 * 1024)} MiB of JSON)"
            )


class CourierError(Exception):
    """A failure the CLI reports in one sentence with an exit code."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(CourierError):
    exit_code = EXIT_USAGE


class ApiError(CourierError):
    """The service answered with an error status."""

    def __init__(self, status: int, detail: str, code: str = "") -> None:
        self.status, self.detail, self.code = status, detail, code
        if status in (401, 403):
            exit_code = EXIT_AUTH
        elif status == 404:
            exit_code = EXIT_NOT_FOUND
        else:
            exit_code = EXIT_FAILURE
        suffix = f" ({code})" if code else ""
        super().__init__(f"HTTP {status}: {detail}{suffix}", exit_code=exit_code)


def api_error(response: requests.Response) -> ApiError:
    """The service's `{"detail", "code"}` error body, or the bare status for anything else
    (a proxy's HTML page, a truncated body)."""
    detail, code = response.reason or "error", ""
    raw = b""
    try:  # an error body is short: no more than 64 KiB of it is read
        for chunk in pace.iter_body(response):
            raw += chunk
            if len(raw) > 65536:
                break
    except requests.RequestException:
        pass
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        detail, code = body["detail"], str(body.get("code") or "")
    return ApiError(response.status_code, printable(detail)[:500], printable(code)[:100])


# The secrets this process was given (the configured token): never shown, whoever echoes
# them back (a server's error detail, an exception's text).
_SECRETS: set[str] = set()
REDACTED = "[redacted]"


def keep_secret(secret: str | None) -> None:
    if secret and len(secret) >= 8:
        _SECRETS.add(secret)


def redact(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, REDACTED)
    return text


def printable(text: str) -> str:
    """Text from a file system or a server, safe for a terminal or a CI log: control
    characters (ANSI escapes, newlines that would forge log lines) shown escaped, the
    token this process holds redacted."""
    out = []
    for ch in redact(str(text)):
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out)


# Lines a CI runner reads as commands: GitHub Actions' `::command::` and its older `##[...]`
# form, after optional blanks. Only courier itself writes them (`::add-mask::`).
_WORKFLOW_COMMAND = re.compile(r"^(\s*)(::|##\[)")


def log_line(text: str) -> str:
    """One line for a terminal or a CI log: printable, and not a workflow command however
    it starts (a path from the server could be `::stop-commands::...`): the command's first
    character is shown escaped."""
    line = printable(text)
    match = _WORKFLOW_COMMAND.match(line)
    if match:
        at = match.end(1)
        line = f"{line[:at]}\\x{ord(line[at]):02x}{line[at + 1 :]}"
    return line


def _endpoint(url: str) -> tuple[str, str, int | None] | None:
    """Where a request for ``url`` goes: (scheme, host, port) as requests (urllib3) reads the
    URL, the reading every request follows; None if Python's own parser reads another host or
    port. The two disagree on some URLs (``http://a.example\\@127.0.0.1/``: urllib3 ends the
    host at the backslash), and a decision made on the reading that is not followed would let
    such a URL pass for loopback or for the service's origin while it goes elsewhere."""
    try:
        ours, theirs = urlsplit(url), parse_url(url)
        port, our_host = ours.port, ours.hostname or ""
        if not our_host.isascii():  # an international name, sent in its IDNA form
            our_host = parse_url(f"http://{our_host}").host or ""
    except ValueError:
        return None
    host = (theirs.host or "").lower()
    if host.startswith("["):
        host = host[1:-1]
    if our_host != host or port != theirs.port:
        return None
    return (theirs.scheme or "").lower(), host, theirs.port


def check_url(url: str, what: str) -> str:
    """``url`` if it is an http(s) URL that parses (one way: see ``_endpoint``), a UsageError
    naming ``what`` otherwise; the URL itself is never repeated (a link's query is its
    credential)."""
    endpoint = _endpoint(url)
    if endpoint is None:
        raise UsageError(f"{what} is not a valid URL")
    scheme, host, _ = endpoint
    if scheme not in ("http", "https") or not host:
        raise UsageError(f"{what} must be an http(s) URL")
    return url


def cleartext_check(url: str) -> None:
    """A token goes over plain http only to this machine (a service on loopback, a test), or
    where COURIER_ALLOW_HTTP=1 says the network is trusted: anyone on the way could read it."""
    endpoint = _endpoint(url)
    if endpoint is not None and endpoint[0] != "http":
        return
    if endpoint is not None and os.environ.get("COURIER_ALLOW_HTTP") == "1":
        return
    host = endpoint[1] if endpoint is not None else ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(
            f"refusing to send the token over plain http to {_origin(url)}: use https, or set "
            "COURIER_ALLOW_HTTP=1 if that network is trusted"
        )


def same_origin(a: str, b: str) -> bool:
    """Do requests for ``a`` and ``b`` go to one origin (scheme, host, port)? Never for a URL
    the two parsers read differently."""
    ea, eb = _endpoint(a), _endpoint(b)
    return ea is not None and ea == eb


@dataclass
class Config:
    url: str
    token: str | None
    retries: int = 4
    timeout: float = 60.0


class _NoOtherCredentials(AuthBase):
    """The session's auth: leaves a request as it is. Being set, it keeps requests from
    adding credentials of its own from ~/.netrc or a URL's user:password@."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


class _Session(requests.Session):
    """No credentials but courier's own. requests would otherwise send the runner's
    ~/.netrc credentials for the service's host instead of the token, and, after a redirect
    a server chose, those for the host it points to (over plain http if it says so)."""

    def __init__(self) -> None:
        super().__init__()
        self.auth = _NoOtherCredentials()

    def rebuild_auth(self, prepared_request, response) -> None:
        # requests' own, without its ~/.netrc look-up: the token (Authorization) is dropped
        # on the way to another host, port or scheme.
        headers = prepared_request.headers
        if "Authorization" in headers and self.should_strip_auth(
            response.request.url, prepared_request.url
        ):
            del headers["Authorization"]


class Client:
    """Requests with retries. The bearer token is only ever sent to the configured service's
    origin: signed links and redirects elsewhere (S3) travel without it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        if config.url:
            check_url(config.url, "the service URL")
        self.base = config.url.rstrip("/") + "/" if config.url else ""
        keep_secret(config.token)
        self._local = threading.local()

    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = _Session()
            pace.mount(session)
            session.hooks["response"].append(_bounded_redirect_body)
            session.headers["User-Agent"] = f"courier/{__version__}"
            self._local.session = session
        return session

    def absolute(self, path_or_url: str) -> str:
        if urlsplit(path_or_url).scheme:
            return path_or_url
        if not self.base:
            raise UsageError("no service URL: set COURIER_URL or pass --url")
        return urljoin(self.base, path_or_url.lstrip("/"))

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        auth: bool = True,
        json: Any = None,
        body: Callable[[], Any] | None = None,
        headers: dict | None = None,
        params: dict | None = None,
        idempotent: bool | None = None,
        expect: tuple[int, ...] = (200, 201, 204),
    ) -> requests.Response:
        """One API call. ``body`` is a factory so that a retry sends the body afresh.
        Idempotent calls (GET, PUT, DELETE and the uploads) are retried on connection
        errors and 5xx with exponential backoff. Others (a POST creating a build, a share, a
        key) only when nothing can have been done: the connection was refused, or the
        answer says the request was refused before acting (see ``_refused_before_acting``);
        a second build or key is worse than a failed job.

        The answer comes back unread (streamed): its body is read with ``read_json`` or in
        chunks by the caller, never whole into memory, however long a server makes it."""
        url = self.absolute(path_or_url)
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        all_headers = {"Accept": "application/json", **(headers or {})}
        if auth:
            if not self.config.token:
                raise CourierError(
                    "no token: set COURIER_TOKEN (from your CI's secret store)",
                    exit_code=EXIT_AUTH,
                )
            if not same_origin(url, self.base):
                raise CourierError(f"refusing to send the token to another origin: {_origin(url)}")
            cleartext_check(url)
            all_headers["Authorization"] = f"Bearer {self.config.token}"
        attempt = 0
        while True:
            watch = pace.start(self.config.timeout)
            try:
                response = self.session().request(
                    method,
                    url,
                    json=json,
                    data=body() if body is not None else None,
                    headers=all_headers,
                    params=params,
                    stream=True,
                    timeout=(10, self.config.timeout),
                )
                if watch.stalled:
                    # Its socket shut down mid-head: what was parsed is no answer.
                    response.close()
                    raise requests.ConnectionError("stalled")
            except (requests.ConnectionError, requests.Timeout) as exc:
                watch.finish()
                # Refused, or no connection within the connect timeout: nothing was sent.
                nothing_sent = not watch.stalled and (
                    isinstance(exc, requests.ConnectTimeout)
                    or (isinstance(exc, requests.ConnectionError) and _refused(exc))
                )
                if attempt < self.config.retries and (idempotent or nothing_sent):
                    attempt += 1
                    time.sleep(backoff(attempt))
                    continue
                if watch.stalled:
                    raise CourierError(f"{_origin(url)} stalled: {watch.reason}") from None
                if isinstance(exc, requests.Timeout) and not nothing_sent:
                    raise CourierError(f"{_origin(url)} did not answer in time") from None
                broken = _broken_answer(exc)
                if broken is not None:
                    raise CourierError(
                        f"{_origin(url)} sent a broken answer ({type(broken).__name__})"
                    ) from None
                raise CourierError(f"cannot reach {_origin(url)}: {_reason(exc)}") from None
            except requests.TooManyRedirects:
                watch.finish()
                raise CourierError(f"{_origin(url)} redirects in a loop") from None
            except requests.exceptions.InvalidHeader:
                watch.finish()
                # Also a ValueError (below): here, headers no reader can take as meant, such
                # as two different Content-Lengths.
                raise CourierError(f"{_origin(url)} sent a broken answer (its headers)") from None
            except (
                requests.exceptions.InvalidURL,
                requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema,
                ValueError,
            ):
                watch.finish()
                # A link we were given is checked beforehand: this is a redirect's Location.
                raise CourierError(f"{_origin(url)} redirected to an invalid URL") from None
            except requests.RequestException as exc:
                watch.finish()
                if watch.stalled:
                    raise CourierError(f"{_origin(url)} stalled: {watch.reason}") from None
                # A body cut short, an undecodable encoding...: one line, no URL (its query
                # may be a signature), no traceback.
                raise CourierError(
                    f"{_origin(url)} sent a broken answer ({type(exc).__name__})"
                ) from None
            _watch_until_closed(response, watch)
            status = response.status_code
            if status in RETRY_STATUSES and attempt < self.config.retries:
                if not idempotent:
                    # The answer decides (its body is read to know): the error it holds is
                    # the verdict if it is not a refusal made before acting.
                    error = api_error(response)
                    response.close()
                    if not _refused_before_acting(response, error):
                        raise error
                attempt += 1
                delay = _retry_after(response) or backoff(attempt)
                response.close()
                time.sleep(delay)
                continue
            if response.status_code not in expect:
                error = api_error(response)
                response.close()
                raise error
            return response

    def get_json(self, path: str, **kwargs) -> Any:
        return read_json(self.request("GET", path, **kwargs))

    def post_json(self, path: str, payload: Any, **kwargs) -> Any:
        return read_json(self.request("POST", path, json=payload, **kwargs))

    def paginate(
        self,
        path: str,
        params: dict | None = None,
        *,
        items: str = "results",
        first_page: Any = None,
        budget: ListingBudget | None = None,
        **kwargs,
    ) -> Iterator[dict]:
        """Every item of a paginated listing (under ``items`` on each page), following ``next``
        links (page or cursor pagination alike) while they stay on the origin of ``path``,
        within one ListingBudget. ``first_page``: the page at ``path``, already read (with
        ``budget``)."""
        url = self.absolute(path)
        origin = url
        budget = budget or ListingBudget()
        page = first_page
        while True:
            if page is None:
                budget.page(url)
                page = read_json(self.request("GET", url, params=params, **kwargs), budget)
                params = None  # the next links carry their own
            if isinstance(page, list):
                yield from page
                return
            if not isinstance(page, dict) or not isinstance(page.get(items), list):
                raise CourierError("the server answered a listing in an unexpected shape")
            yield from page[items]
            following = page.get("next")
            if following is None or following == "":
                return
            if not isinstance(following, str) or not same_origin(urljoin(url, following), origin):
                raise CourierError("the listing's next page is not a link on its origin")
            url, page = urljoin(url, following), None


def _bounded_redirect_body(response: requests.Response, **kwargs) -> requests.Response:
    """requests reads a redirect's body whole before following it: no more than
    MAX_REDIRECT_BODY of it is read here, and a longer one ends its connection."""
    if response.is_redirect:
        read = 0
        for chunk in pace.iter_body(response):
            read += len(chunk)
            if read > MAX_REDIRECT_BODY:
                response.raw.close()
                break
        response._content = b""  # what requests reads next: nothing more
    return response


def _watch_until_closed(response: requests.Response, watch: pace.Pace) -> None:
    """The answer's body stays watched until the answer is closed (``with response``)."""
    close = response.close

    def close_and_unwatch() -> None:
        watch.finish()
        close()

    response.close = close_and_unwatch  # type: ignore[method-assign]


def read_json(response: requests.Response, budget: ListingBudget | None = None) -> Any:
    """The answer's JSON document, read up to MAX_JSON bytes (a hostile server's endless
    listing must not exhaust memory), and charged to ``budget`` (a listing's pages together);
    a body cut short or not JSON is a CourierError."""
    with response:
        body = bytearray()
        try:
            for chunk in pace.iter_body(response):
                body += chunk
                if budget is not None:
                    budget.charge(len(chunk), _origin(response.url))
                if len(body) > MAX_JSON:
                    raise CourierError(f"{_origin(response.url)} answered more JSON than expected")
        except requests.RequestException as exc:
            if pace.stalled():
                raise CourierError(f"{_origin(response.url)} {pace.reason()}") from None
            raise CourierError(
                f"{_origin(response.url)} sent a broken answer ({type(exc).__name__})"
            ) from None
    if response.status_code == 204 or not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        raise CourierError(f"expected JSON from {_origin(response.url)}") from None


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter (AWS architecture blog's recommendation), capped."""
    return random.uniform(0, min(8.0, 0.5 * 2**attempt))


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    if value.isdigit():
        return min(float(value), 30.0)
    return None


def _refused_before_acting(response: requests.Response, error: ApiError) -> bool:
    """True when an answer proves the request was not acted on, so that a POST that creates
    something may be sent again: 429 (throttled: refused as such) with Retry-After, or the
    service's own 503 with Retry-After and a code it sends only before acting. A proxy's
    502/503/504 (the service may have committed and then gone away) proves nothing."""
    if "Retry-After" not in response.headers:
        return False
    if response.status_code == 429:
        return True
    return response.status_code == 503 and error.code in REFUSED_BEFORE_ACTING


def _refused(exc: Exception) -> bool:
    seen = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return True
        if "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _broken_answer(exc: BaseException) -> BaseException | None:
    """The http.client error inside a connection error when the server did answer, but not
    in HTTP (a status line that is none, a header line too long, endless interim answers);
    None when the connection itself failed (refused, reset, closed before any answer)."""
    for _ in range(8):  # requests' error, urllib3's, then http.client's
        if isinstance(exc, http.client.HTTPException) and not isinstance(exc, OSError):
            return exc
        inner = [a for a in exc.args if isinstance(a, BaseException)]
        context = None if exc.__suppress_context__ else exc.__context__
        exc = inner[0] if inner else exc.__cause__ or context
        if exc is None:
            return None
    return None


def _reason(exc: Exception) -> str:
    if _refused(exc):
        return "connection refused"
    text = str(exc)
    return printable(text.split("Caused by")[-1].strip(" ()'\"")[:200]) or "connection error"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return printable(f"{parts.scheme}://{parts.netloc}")
