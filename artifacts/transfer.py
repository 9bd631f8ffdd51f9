"""Receiving a request body: bytes go to storage and through SHA-256 in one pass.

The body is read in large chunks straight from the WSGI input (no DRF parser, no temporary
copy). Hashing runs on a helper thread, one chunk behind the reads and writes: hashlib releases
the GIL on large buffers, so on a multi-core machine the digest costs almost no wall time.
Only a few chunks are ever in flight, so memory stays flat whatever the body's size.
"""

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings

from .errors import IncompleteBody, QuotaExceeded
from .storage import BlobWriter

# Reads ahead of the hasher at most this many chunks (memory bound: (n + 1) * chunk size).
MAX_CHUNKS_IN_FLIGHT = 2


@dataclass(frozen=True)
class Received:
    size: int
    sha256: str


def body_receive(
    *, stream, writer: BlobWriter, content_length: int | None, limit: int, limit_reason: str
) -> Received:
    """Read the whole body from ``stream`` into ``writer``; return its size and SHA-256.

    ``content_length`` None means chunked transfer encoding (read to EOF). More than ``limit``
    bytes raises QuotaExceeded as soon as the limit is crossed, before the rest is read.
    The caller aborts the writer on any exception.
    """
    chunk_size = settings.ARTIFACT_UPLOAD_CHUNK_SIZE
    digest = hashlib.sha256()
    pending: deque[Future] = deque()
    size = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as hasher:
        try:
            while content_length is None or size < content_length:
                want = (
                    chunk_size if content_length is None else min(chunk_size, content_length - size)
                )
                try:
                    data = stream.read(want)
                except Exception as exc:  # a reset socket, gunicorn's NoMoreData, bad chunking
                    raise IncompleteBody(
                        f"The request body could not be read after {size} bytes "
                        f"({type(exc).__name__}); nothing was stored."
                    ) from exc
                if not data:
                    break
                size += len(data)
                if size > limit:
                    raise QuotaExceeded(limit_reason)
                pending.append(hasher.submit(digest.update, data))
                writer.write(data)
                while len(pending) > MAX_CHUNKS_IN_FLIGHT:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    if content_length is not None and size < content_length:
        raise IncompleteBody(
            f"The request body ended after {size} of {content_length} bytes; nothing was stored."
        )
    return Received(size=size, sha256=digest.hexdigest())
