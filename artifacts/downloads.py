"""Answering a GET/HEAD for an artifact: conditional requests and ranges (RFC 9110 §13, §14)."""

import base64
import posixpath
import re

from django.conf import settings
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.utils.http import content_disposition_header

from . import storage
from .models import Artifact

# [0-9], not \d: \d also matches other scripts' digits ("²", "٣"), which int() may refuse.
_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


class RangeNotSatisfiable(Exception):
    pass


# Any byte position with more digits than this lies beyond every file we store (2**63).
_POSITION_MAX_DIGITS = 18


def _position(digits: str) -> int:
    """A byte position from its ASCII digits. A number longer than any file (a client may send
    thousands of digits; int() refuses over 4300) is capped: it still means "past the end"."""
    digits = digits.lstrip("0") or "0"
    if len(digits) > _POSITION_MAX_DIGITS:
        return 10**_POSITION_MAX_DIGITS
    return int(digits)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range ``header`` asks for as (start, end inclusive), or None for the
    whole representation. Syntax we do not serve (several ranges, other units, garbage) is
    ignored, as RFC 9110 §14.2 allows; a well-formed range outside the file raises."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    start = _position(first)
    end = _position(last) if last else size - 1
    if last and end < start:
        return None  # invalid range-spec: ignore the header
    if start >= size:
        raise RangeNotSatisfiable
    return start, min(end, size - 1)


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): If-None-Match compares opaque tags, ignoring W/."""
    if header.strip() == "*":
        return True
    tags = (tag.strip() for tag in header.split(","))
    return any(tag.removeprefix("W/") == etag for tag in tags)


def _representation_headers(response: HttpResponse, artifact: Artifact, etag: str) -> None:
    blob = artifact.blob
    response["ETag"] = etag
    response["X-Checksum-Sha256"] = blob.sha256
    response["Repr-Digest"] = f"sha-256=:{base64.b64encode(bytes.fromhex(blob.sha256)).decode()}:"
    response["Accept-Ranges"] = "bytes"
    # Artifacts are untrusted content: never rendered by the browser in our origin.
    response["Content-Disposition"] = content_disposition_header(
        True, posixpath.basename(artifact.path)
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "sandbox"
    response["Cache-Control"] = "private, no-cache"


def artifact_response(request, artifact: Artifact) -> HttpResponse:
    blob = artifact.blob
    etag = f'"{blob.sha256}"'
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and _etag_matches(if_none_match, etag):
        response = HttpResponse(status=304)
        _representation_headers(response, artifact, etag)
        return response

    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        range_header = None  # the client's copy is stale: send it all (RFC 9110 §13.1.5)
    try:
        requested = byte_range(range_header, blob.size)
    except RangeNotSatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{blob.size}"
        _representation_headers(response, artifact, etag)
        return response

    if settings.ARTIFACT_S3_REDIRECT and request.method == "GET":
        url = storage.blob_presigned_url(
            blob.storage_name,
            filename=posixpath.basename(artifact.path),
            expires=settings.ARTIFACT_REDIRECT_EXPIRES,
        )
        if url is not None:
            response = HttpResponseRedirect(url)
            _representation_headers(response, artifact, etag)
            return response

    start, end = requested if requested is not None else (0, blob.size - 1)
    length = end - start + 1
    if request.method == "HEAD":
        response = HttpResponse(content_type=artifact.content_type)
    elif requested is None and (path := storage.blob_local_path(blob.storage_name)):
        # The whole file from local disk: the WSGI server can sendfile() it.
        response = FileResponse(open(path, "rb"), content_type=artifact.content_type)  # noqa: SIM115
    else:
        response = StreamingHttpResponse(
            storage.blob_read(blob.storage_name, start=start, length=length),
            content_type=artifact.content_type,
        )
    if requested is not None:
        response.status_code = 206
        response["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    response["Content-Length"] = str(length)
    _representation_headers(response, artifact, etag)
    return response
