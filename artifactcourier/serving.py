"""gunicorn's threaded worker, with a deadline on the request head.

gunicorn's gthread worker hands a connection to a thread as soon as a byte arrives, and that
thread then reads the request head with no time limit: a client that sends half a head and
stops keeps the thread for as long as it keeps the connection open. Here the whole head must
arrive within ``GUNICORN_HEAD_TIMEOUT`` seconds (default 20) from its first byte, or the
connection is closed without an answer (what gunicorn does with a client gone mid-head). The
body is the application's to bound (ARTIFACT_UPLOAD_IDLE_TIMEOUT); the response is written with
no limit, so a slow download is never cut.
"""

import os
import time

from gunicorn.http.errors import NoMoreData
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import ThreadWorker as GThreadWorker

HEAD_TIMEOUT = float(os.environ.get("GUNICORN_HEAD_TIMEOUT", "20"))


class _HeadDeadline:
    """Wraps a connection's socket reads: while armed, each read waits at most until the
    deadline, and a read that would wait longer ends the request as a client gone away."""

    def __init__(self, unreader: SocketUnreader) -> None:
        self.unreader = unreader
        self.read = unreader.chunk
        self.deadline: float | None = None
        unreader.chunk = self.chunk

    def arm(self) -> None:
        self.deadline = time.monotonic() + HEAD_TIMEOUT

    def disarm(self) -> None:
        self.deadline = None
        self.unreader.sock.settimeout(None)

    def chunk(self, size_hint=None):
        if self.deadline is None:
            return self.read(size_hint)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise NoMoreData(b"request head not complete in time")
        self.unreader.sock.settimeout(remaining)
        try:
            return self.read(size_hint)
        except TimeoutError:
            raise NoMoreData(b"request head not complete in time") from None


class ThreadWorker(GThreadWorker):
    def enqueue_req(self, conn):
        if HEAD_TIMEOUT > 0 and not hasattr(conn, "head_deadline"):
            conn.head_deadline = None
            init = conn.init

            # gunicorn calls init() in the thread each time it starts reading a request on the
            # connection (the first, and each one kept alive): arm the deadline there.
            def init_and_arm():
                init()
                unreader = getattr(conn.parser, "unreader", None)
                if conn.head_deadline is None and isinstance(unreader, SocketUnreader):
                    conn.head_deadline = _HeadDeadline(unreader)
                if conn.head_deadline is not None:
                    conn.head_deadline.arm()

            conn.init = init_and_arm
        super().enqueue_req(conn)

    def handle_request(self, req, conn):
        # The head is complete: the body and the response are not bound by its deadline.
        if getattr(conn, "head_deadline", None) is not None:
            conn.head_deadline.disarm()
        return super().handle_request(req, conn)
