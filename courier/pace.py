"""A transfer that keeps moving, or ends.

A socket timeout bounds one read: a server (or anything on the way) that sends a byte now
and then is never silent long enough to trip it, and can hold a CI job for ever with an
answer's head, a JSON document or a download. Each request is watched from its first byte
to the end of its answer (what goes out too), per window of ``window`` seconds
(``--timeout``):

- while the request goes out and while the answer's body comes in, at least ``MIN_BYTES``
  must move in every window;
- the answer's head (status line and headers) must be complete within two windows of the
  request having been sent (one of silence, as a read timeout allows, and one more).

A request that falls behind is stalled: a watchdog thread shuts its socket down, which ends
whatever read or write is blocked on it (with an error the caller sees as a broken
connection, and ``stalled()`` tells apart). The socket is known through the connection
classes this module gives the session (``mount``)."""

from __future__ import annotations

import contextlib
import http.client
import queue
import socket
import threading
import time
from collections.abc import Iterator

import requests
from requests.adapters import HTTPAdapter

# urllib3: requests' own dependency.
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError

# What a transfer must move in each window to count as moving (32 KiB a minute with the
# default --timeout of 60: about 0.5 KiB/s, far below any working link).
MIN_BYTES = 32 * 1024
# Bodies are read in pieces of this size: what arrives is seen (counted) at least this often.
READ_CHUNK = 64 * 1024
_TICK = 0.25

_SEND, _HEAD, _BODY = "send", "head", "body"


class Pace:
    """The progress of one request, watched."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.lock = threading.Lock()
        self.phase = _SEND
        self.mark = time.monotonic()
        self.moved = 0
        self.mark_moved = 0
        self.stalled = False
        self.reason = ""
        self.done = False
        self._socks: list[socket.socket] = []

    def attach(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self.lock:
            if sock not in self._socks:
                self._socks.append(sock)
            stalled = self.stalled
        if stalled:
            _shutdown(sock)

    def detach(self, sock: socket.socket) -> None:
        with self.lock:
            if sock in self._socks:
                self._socks.remove(sock)

    def count(self, n: int) -> None:
        self.moved += n

    def sending(self) -> None:
        with self.lock:
            self.phase, self.mark, self.mark_moved = _SEND, time.monotonic(), self.moved

    def awaiting_head(self) -> None:
        with self.lock:
            self.phase, self.mark = _HEAD, time.monotonic()

    def head_received(self) -> None:
        with self.lock:
            self.phase, self.mark, self.mark_moved = _BODY, time.monotonic(), self.moved

    def finish(self) -> None:
        with self.lock:
            self.done = True
            self._socks = []
        _watchdog.remove(self)

    def check(self, now: float) -> None:
        with self.lock:
            if self.done or self.stalled:
                return
            elapsed = now - self.mark
            if self.phase == _HEAD:
                behind = elapsed > 2 * self.window
                reason = f"no complete answer within {2 * self.window:g} s of the request"
            elif elapsed < self.window:
                return
            else:
                behind = self.moved - self.mark_moved < MIN_BYTES
                reason = f"less than {MIN_BYTES // 1024} KiB moved in {self.window:g} s"
                self.mark, self.mark_moved = now, self.moved
            if not behind:
                return
            self.stalled, self.reason = True, f"{reason} (--timeout {self.window:g})"
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    """Ends the reads and writes blocked on ``sock`` (in another thread); the base class's
    method also for a TLS socket, whose own would first drop its TLS state."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.paces: set[Pace] = set()
        self.thread: threading.Thread | None = None

    def add(self, pace: Pace) -> None:
        with self.lock:
            self.paces.add(pace)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="courier-pace", daemon=True)
                self.thread.start()

    def remove(self, pace: Pace) -> None:
        with self.lock:
            self.paces.discard(pace)

    def _run(self) -> None:
        while True:
            time.sleep(_TICK)
            with self.lock:
                paces = list(self.paces)
                if not paces:
                    self.thread = None
                    return
            now = time.monotonic()
            for pace in paces:
                pace.check(now)


_watchdog = _Watchdog()
_local = threading.local()


def start(window: float) -> Pace:
    """A new watched request in this thread (the previous one's watch ends)."""
    end()
    pace = Pace(window)
    _local.pace = pace
    _watchdog.add(pace)
    return pace


def end() -> None:
    pace = getattr(_local, "pace", None)
    if pace is not None:
        pace.finish()
        _local.pace = None


def current() -> Pace | None:
    return getattr(_local, "pace", None)


def stalled() -> bool:
    """Whether this thread's request was given up as stalled."""
    pace = current()
    return bool(pace and pace.stalled)


def reason() -> str:
    """Why this thread's request was given up as stalled."""
    pace = current()
    return f"stalled: {pace.reason}" if pace and pace.stalled else "stalled"


def count(n: int) -> None:
    """``n`` bytes of this thread's request went out or came in."""
    pace = current()
    if pace is not None:
        pace.count(n)


def iter_body(response: requests.Response, chunk: int = READ_CHUNK) -> Iterator[bytes]:
    """The answer's body in pieces of at most ``chunk`` bytes, each counted as progress. Each
    piece is what one read from the connection gave (``read1``): bytes are seen as they arrive,
    however large ``chunk`` is, and a large one costs few Python steps per MiB. A body that
    ends because its stalled socket was shut down is an error, not an end (one without a
    length would otherwise look complete). Errors are requests', as iter_content raises them."""
    raw = response.raw
    try:
        while data := raw.read1(chunk, decode_content=True):
            if stalled():
                break
            count(len(data))
            yield data
    except ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from None
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except SSLError as exc:
        raise requests.exceptions.SSLError(exc) from None
    if stalled():
        raise requests.ConnectionError("stalled")


def iter_body_into(
    response: requests.Response, buffers: queue.Queue[bytearray], chunk: int = READ_CHUNK
) -> Iterator[bytes | memoryview]:
    """iter_body, without a new object per piece where the answer allows: each piece is then
    a view of a buffer taken from ``buffers``, received straight into it (as curl reuses one
    buffer), which the caller puts back once done with it; reading waits for a free buffer.
    A body that ends before its length is an error, as in iter_body. A body it cannot read
    that way (chunked, or with a content coding to undo) comes as iter_body gives it, in
    pieces of at most ``chunk`` bytes."""
    raw = response.raw
    original = getattr(raw, "_original_response", None)
    direct = (
        isinstance(original, _Response)
        and original.direct()
        and raw.tell() == 0
        and not content_coded(response)
    )
    if not direct:
        yield from iter_body(response, chunk)
        return
    while True:
        buffer = buffers.get()
        try:
            n = original.readinto1(buffer)
        except OSError as exc:  # a timeout, a reset, the watchdog's shutdown
            raise requests.ConnectionError(exc) from None
        if not n or stalled():
            buffers.put(buffer)
            break
        count(n)
        yield memoryview(buffer)[:n]
    if stalled():
        raise requests.ConnectionError("stalled")
    if original.length:
        # Closed before the end: an error, as urllib3 makes it of a body it reads (the
        # caller's own look at the Content-Length header would miss one it cannot parse,
        # sent twice for instance, and take what came for the whole body).
        raise requests.ConnectionError("the connection closed before the end of the body")
    raw.release_conn()  # read to its end: the connection can serve the next request


def content_coded(response: requests.Response) -> bool:
    """Whether the body comes in a content coding urllib3 undoes (a server may send one though
    courier asks for none): what is read then is not what Content-Length counts."""
    return response.headers.get("Content-Encoding", "identity").strip().lower() != "identity"


_INTERIM_ANSWERS = 20  # 1xx answers before the final one, at most


class TooManyInterimAnswers(http.client.HTTPException):
    """A server kept sending interim (1xx) answers instead of its answer."""


class HeadCutShort(http.client.HTTPException):
    """The connection closed inside an answer's head (an interim one's too), which had begun."""


class _HeadLines:
    """The connection's reader while an answer's head is parsed: whether anything came, and
    whether the last line read ended the head. (http.client stops at the end of the
    connection as at a blank line, so a head cut short would pass for a whole one with the
    headers it got so far.)"""

    def __init__(self, fp) -> None:  # type: ignore[no-untyped-def]
        self.fp = fp
        self.received = False
        self.ended = False

    def readline(self, limit: int = -1) -> bytes:
        line = self.fp.readline(limit)
        self.received = self.received or bool(line)
        self.ended = line in (b"\r\n", b"\n")
        return line

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.fp, name)


class _Response(http.client.HTTPResponse):
    """http.client's answer, which also skips interim answers, refuses a head cut short, and
    can receive its body into a buffer the caller owns."""

    def begin(self) -> None:
        head = _HeadLines(self.fp)
        self.fp = head
        try:
            super().begin()
        except http.client.RemoteDisconnected:
            if head.received:  # it answered (an interim answer), then closed: it was reached
                raise HeadCutShort("the connection closed before the final answer") from None
            raise
        finally:
            if self.fp is head:  # (not when http.client closed it, for an error)
                self.fp = head.fp
        if not head.ended:
            raise HeadCutShort("the connection closed inside the answer's head")

    def _read_status(self) -> tuple[str, int, str]:
        """The status line of the final answer. http.client skips only ``100 Continue`` and
        would take any other interim answer (``103 Early Hints``, RFC 8297; ``102``) for the
        answer itself. Every 1xx but 101 (final; courier never asks for it) is skipped here,
        100 too, so that ``begin()`` never starts the count afresh: at most
        ``_INTERIM_ANSWERS`` in all."""
        for _ in range(_INTERIM_ANSWERS + 1):
            version, status, reason = super()._read_status()
            if not 100 <= status < 200 or status == 101:
                return version, status, reason
            http.client.parse_headers(self.fp)  # its headers, bounded as the answer's are
        raise TooManyInterimAnswers(f"more than {_INTERIM_ANSWERS} interim answers")

    def direct(self) -> bool:
        """Whether readinto1 can read this body: one of a known length, sent as it is."""
        return not self.chunked and self.length is not None and self._method != "HEAD"

    def readinto1(self, buffer: bytearray) -> int:
        """As readinto, with at most one read from the connection (what has arrived, as
        read1), for a body that is ``direct()``; 0 at its end or once the connection closed
        (``length`` then says what is missing)."""
        if self.fp is None:
            return 0
        if not self.length:  # an empty body: complete, as a read of it makes it
            self._close_conn()
            return 0
        view = memoryview(buffer)[: self.length]
        n = self.fp.readinto1(view)
        if not n:
            self._close_conn()  # closed before the end: the caller compares with the length
            return 0
        self.length -= n
        if not self.length:
            self._close_conn()
        return n


# -- the session's connections: their sockets, known to the request's watch ----------------


class _Watched:
    """Mixed into urllib3's connection classes: registers the socket with this thread's
    watch, and marks when the answer's head is awaited and received. (Connecting is bounded
    already: the connect timeout, which CPython applies to a TLS handshake as a whole.)"""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        pace = current()
        if pace is not None:
            pace.attach(self.sock)  # type: ignore[attr-defined]

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        pace = current()
        if pace is not None:
            pace.sending()  # one request of this call (a redirect's next one too)
            pace.attach(self.sock)  # type: ignore[attr-defined]  (a kept-alive connection)
        return super().request(*args, **kwargs)  # type: ignore[misc]

    def _tunnel(self) -> None:
        # A proxy's answer to CONNECT: what is broken there is the proxy's, not the origin's
        # (an OSError: the origin was not reached).
        try:
            super()._tunnel()  # type: ignore[misc]
        except http.client.HTTPException as exc:
            if isinstance(exc, OSError):
                raise
            raise OSError(f"the proxy sent a broken answer ({type(exc).__name__})") from None

    def getresponse(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        pace = current()
        if pace is not None:
            pace.attach(self.sock)  # type: ignore[attr-defined]
            pace.awaiting_head()
        response = super().getresponse(*args, **kwargs)  # type: ignore[misc]
        if pace is not None:
            pace.head_received()
        return response


class _HTTPConnection(_Watched, HTTPConnection):
    response_class = _Response


class _HTTPSConnection(_Watched, HTTPSConnection):
    response_class = _Response


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, **kwargs)
        if hasattr(manager, "pool_classes_by_scheme"):
            manager.pool_classes_by_scheme = _POOLS
        return manager


def mount(session: requests.Session) -> None:
    """Connections of ``session`` are watched."""
    session.mount("http://", _Adapter())
    session.mount("https://", _Adapter())
