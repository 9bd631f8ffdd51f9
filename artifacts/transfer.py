"""Receiving a request body: bytes go to storage and through SHA-256 in one pass.

The body is read in large chunks straight from the WSGI input (no DRF parser, no temporary
copy) into one reused buffer; each chunk is hashed and handed to the writer before the next is
read, so memory stays flat whatever the body's size.

Under gunicorn, a body of known length is read with ``socket.recv_into`` into that buffer,
bypassing gunicorn's ``Body.read``, which copies every byte several times through BytesIO
buffers; measured on loopback with a 1 GiB body that more than doubles throughput (bench/
transfer.py). Hashing stays inline on purpose: a hashing thread next to a thread blocking in
``recv_into`` fights over the GIL (a re-acquire can wait a whole switch interval) and was
an order of magnitude slower, while inline hashing overlaps with the client still sending into
the socket buffer. Any other server, or a chunked body, takes the portable ``read()`` path.

A client that stops sending mid-body is cut after ``ARTIFACT_UPLOAD_IDLE_TIMEOUT`` seconds
without a byte (408, nothing stored): under gunicorn, on either path, the connection's socket
gets that timeout for the time the body is read. A slow client that keeps sending is never cut,
whatever the body's size.
"""

import errno
import hashlib
import socket
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

from django.conf import settings

from .errors import BodyStalled, IncompleteBody, QuotaExceeded, StorageFull
from .storage import BlobWriter

# The storage has no room: the server's condition, not the client's fault, and worth telling.
_STORAGE_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class Received:
    size: int
    sha256: str


def _server_socket(stream) -> socket.socket | None:
    """The client connection's socket behind gunicorn's ``wsgi.input``, whatever its body
    reader (known length, chunked, to EOF); None under any other server."""
    reader = getattr(stream, "reader", None)
    unreader = getattr(reader, "unreader", None) or getattr(
        getattr(reader, "req", None), "unreader", None
    )
    sock = getattr(unreader, "sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _gunicorn_socket(stream, content_length: int | None):
    """``(gunicorn's length reader, already buffered bytes, socket)`` if ``stream`` is
    gunicorn's input for a body of known length whose remaining bytes can be taken straight
    from the socket; else None."""
    reader = getattr(stream, "reader", None)
    unreader = getattr(reader, "unreader", None)
    sock = getattr(unreader, "sock", None)
    if (
        content_length is None
        or type(reader).__name__ != "LengthReader"
        or sock is None
        or not hasattr(unreader, "take_buffered")
        or stream.buf.tell() != 0
        or reader.length != content_length
    ):
        return None
    head = unreader.take_buffered()
    if len(head) > reader.length:  # bytes of a pipelined next request: give them back
        unreader.unread(head[reader.length :])
        head = head[: reader.length]
    return reader, head, sock


def _chunks(stream, content_length: int | None, buffer: bytearray) -> Iterator[memoryview]:
    """The body as memoryviews; a view is only valid until the next one is produced.

    Close the iterator when stopping early: on the direct path that tells gunicorn how much of
    the body is still in the socket."""
    view = memoryview(buffer)
    direct = _gunicorn_socket(stream, content_length)
    if direct is not None:
        reader, head, sock = direct
        remaining = content_length - len(head)
        try:
            if head:
                yield memoryview(head)
            while remaining:
                n = sock.recv_into(view, min(len(buffer), remaining))
                if not n:
                    return
                remaining -= n
                yield view[:n]
        finally:
            # Whatever we did not read, gunicorn must drain (or, if it cannot, close the
            # connection) before it parses the next request on a keep-alive connection; else the
            # rest of this body would be taken for that request.
            reader.length = remaining
        return
    size = 0
    while content_length is None or size < content_length:
        want = len(buffer) if content_length is None else min(len(buffer), content_length - size)
        data = stream.read(want)
        if not data:
            return
        size += len(data)
        yield memoryview(data)


@contextmanager
def body_idle_timeout(stream) -> Iterator[None]:
    """While the body is read from ``stream``: under gunicorn, a read that waits more than
    ARTIFACT_UPLOAD_IDLE_TIMEOUT seconds for a byte raises TimeoutError (see body_stalled).
    Every reader of a request body (single upload, batch) reads inside this."""
    sock = _server_socket(stream)
    if sock is None:
        yield
        return
    before = sock.gettimeout()
    sock.settimeout(settings.ARTIFACT_UPLOAD_IDLE_TIMEOUT or None)
    try:
        yield
    finally:
        # The response is written with the server's own settings (a blocking socket): a slow
        # download is not an idle upload.
        sock.settimeout(before)


def body_stalled(stream, size: int) -> BodyStalled:
    """The 408 for a body read that timed out after ``size`` bytes.

    The rest of the body may still come, or never: the connection cannot carry another
    request. gunicorn closes it after the answer instead of waiting to drain it (the flag its
    body reader sets when a read fails)."""
    if hasattr(stream, "failed"):
        stream.failed = True
    return BodyStalled(
        f"No byte of the request body arrived for "
        f"{settings.ARTIFACT_UPLOAD_IDLE_TIMEOUT} seconds after {size} bytes; "
        "nothing was stored."
    )


def blob_write(writer: BlobWriter, data) -> None:
    """``writer.write(data)``, a full disk or quota raised as StorageFull (507): the server's
    condition, said as such, not a 500."""
    try:
        writer.write(data)
    except OSError as exc:
        if exc.errno in _STORAGE_FULL:
            raise StorageFull() from exc
        raise


def body_receive(
    *, stream, writer: BlobWriter, content_length: int | None, limit: int, limit_reason: str
) -> Received:
    """Read the whole body from ``stream`` into ``writer``; return its size and SHA-256.

    ``content_length`` None means chunked transfer encoding (read to EOF). More than ``limit``
    bytes raises QuotaExceeded as soon as the limit is crossed, before the rest is read.
    ``writer.write`` must not keep the view it is given (the buffer is reused).
    The caller aborts the writer on any exception.
    """
    with body_idle_timeout(stream):
        return _receive(stream, writer, content_length, limit, limit_reason)


def _receive(stream, writer: BlobWriter, content_length, limit, limit_reason) -> Received:
    digest = hashlib.sha256()
    size = 0
    # No larger than the body: a zeroed buffer of ARTIFACT_UPLOAD_CHUNK_SIZE (4 MiB) costs
    # a page fault per 4 KiB touched, more than the rest of receiving a small body.
    chunk_size = settings.ARTIFACT_UPLOAD_CHUNK_SIZE
    if content_length is not None:
        chunk_size = max(1, min(chunk_size, content_length))
    buffer = bytearray(chunk_size)
    with closing(_chunks(stream, content_length, buffer)) as chunks:
        while True:
            try:
                chunk = next(chunks, None)
            except TimeoutError as exc:
                raise body_stalled(stream, size) from exc
            except Exception as exc:  # a reset socket, gunicorn's NoMoreData, bad chunking
                raise IncompleteBody(
                    f"The request body could not be read after {size} bytes "
                    f"({type(exc).__name__}); nothing was stored."
                ) from exc
            if chunk is None:
                break
            size += len(chunk)
            if size > limit:
                raise QuotaExceeded(limit_reason)
            digest.update(chunk)
            blob_write(writer, chunk)
    if content_length is not None and size < content_length:
        raise IncompleteBody(
            f"The request body ended after {size} of {content_length} bytes; nothing was stored."
        )
    return Received(size=size, sha256=digest.hexdigest())
