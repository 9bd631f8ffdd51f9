"""A deadline on every database statement a web request makes (PostgreSQL).

A request waiting on the database holds one of the server's threads. A database that hangs
(it accepts and acknowledges, and never answers: a stuck server, a failover in progress) or a
statement stuck behind a lock would hold them all, the health check's included, for as long
as the database takes: the service would stop answering anything. So, for the web processes
only (the worker's retention and the management commands run long statements on purpose):

- each new connection sets ``statement_timeout`` to ``DATABASE_QUERY_TIMEOUT`` seconds: the
  server cancels a statement running (or waiting on a lock) that long, and the request fails;
- a watchdog thread shuts the socket of a statement still unanswered a second after that: a
  server that cannot cancel (it is not answering at all) is no longer waited for. The wait
  fails at once, the connection is discarded (``conn_health_checks`` replaces it at the next
  request), and the request is answered 503 ``unavailable`` (artifactcourier/api.py).

Installed by ``artifactcourier.wsgi``; it costs a lock and a dictionary entry per statement.
What Django sends past its cursors (the connection health check, COMMIT, ROLLBACK) is watched
by the project's PostgreSQL backend, ``artifactcourier.postgresql``.
"""

import contextlib
import itertools
import os
import socket
import threading
import time

from django.conf import settings
from django.db.backends.signals import connection_created

# A statement the server has been asked to cancel gets this long to come back cancelled before
# its socket is shut down.
_GRACE = 1.0
# How often the watchdog looks; a deadline is kept to within this.
_TICK = 0.25


class _Watchdog:
    """Statements under way, each with the time its socket is shut down if still unanswered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, socket fd)
        self.tokens = itertools.count()
        self.thread: threading.Thread | None = None
        # A thread does not survive a fork (gunicorn forks its workers): a child starts afresh.
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.lock, self.armed, self.thread = threading.Lock(), {}, None

    def arm(self, fd: int, seconds: float) -> int:
        token = next(self.tokens)
        with self.lock:
            self.armed[token] = (time.monotonic() + seconds, fd)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="query-deadline", daemon=True)
                self.thread.start()
        return token

    def disarm(self, token: int) -> None:
        with self.lock:
            self.armed.pop(token, None)

    def _run(self) -> None:
        while True:
            time.sleep(_TICK)
            now = time.monotonic()
            with self.lock:
                # Under the lock: a statement that has returned is disarmed, so its socket
                # (perhaps serving the next statement already) is never touched.
                for token, (deadline, fd) in list(self.armed.items()):
                    if now >= deadline:
                        del self.armed[token]
                        _shut(fd)


def _shut(fd: int) -> None:
    """Shut down the socket behind ``fd`` (not close it: the fd stays its connection's), so
    the wait on it ends with an error."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


_watchdog = _Watchdog()


_installed = False


@contextlib.contextmanager
def watching(wrapper):
    """Bound what runs inside to DATABASE_QUERY_TIMEOUT (and the grace) on ``wrapper``'s
    connection, in a process where the deadline is installed; otherwise, nothing."""
    seconds = settings.DATABASE_QUERY_TIMEOUT
    try:
        fd = wrapper.connection.pgconn.socket if _installed and seconds else -1
    except Exception:  # closed or broken already: what runs fails on its own
        fd = -1
    if fd < 0:
        yield
        return
    token = _watchdog.arm(fd, seconds + _GRACE)
    try:
        yield
    finally:
        _watchdog.disarm(token)


def _deadline(execute, sql, params, many, context):
    with watching(context["connection"]):
        return execute(sql, params, many, context)


def _on_connection(sender, connection, **kwargs) -> None:
    if connection.vendor != "postgresql" or not settings.DATABASE_QUERY_TIMEOUT:
        return
    milliseconds = int(settings.DATABASE_QUERY_TIMEOUT * 1000)
    with watching(connection), connection.connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {milliseconds}")
    if _deadline not in connection.execute_wrappers:
        connection.execute_wrappers.append(_deadline)


def install() -> None:
    """Put every statement of this process's PostgreSQL connections under the deadline: the
    ones Django's cursors run (an execute wrapper on each new connection), and the health
    check, COMMIT and ROLLBACK that the backend sends past them
    (artifactcourier.postgresql)."""
    global _installed
    _installed = True
    connection_created.connect(_on_connection, dispatch_uid="query_deadline")
