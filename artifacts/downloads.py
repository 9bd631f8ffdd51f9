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


def _etag_matches(header: str, etag: str, *, weak: bool = True) -> bool:
    """Does an If-None-Match (weak comparison, W/ ignored) or If-Match (strong: a W/ tag never
    matches) list name ``etag``? RFC 9110 §13.1.1, §13.1.2; ``*`` names any representation."""
    if header.strip() == "*":
        return True
    tags = (tag.strip() for tag in header.split(","))
    return any((tag.removeprefix("W/") if weak else tag) == etag for tag in tags)


def precondition_status(request, etag: str) -> int | None:
    """412 or 304 if a precondition decides the answer, else None (RFC 9110 §13.2.2, GET/HEAD).

    If-Match is evaluated (412 unless it names this representation). If-Unmodified-Since and
    If-Modified-Since are ignored, as §13.1.3-4 require of a resource that has no modification
    date: artifacts are identified by their ETag (the SHA-256), and no Last-Modified is sent.
    """
    if_match = request.headers.get("If-Match")
    if if_match is not None and not _etag_matches(if_match, etag, weak=False):
        return 412
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and _etag_matches(if_none_match, etag):
        return 304
    return None


def requested_range(request, etag: str, size: int) -> tuple[int, int] | None:
    """The one byte range to answer with (start, end inclusive), or None for the whole
    representation: Range as ``byte_range`` reads it, unless If-Range names another
    representation (RFC 9110 §13.1.5: strong comparison; a date never matches, having no
    Last-Modified). Raises RangeNotSatisfiable."""
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None
    return byte_range(request.headers.get("Range"), size)


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


# Preconditions nginx and S3 would judge against validators of their own (the file's mtime and
# no ETag; S3's ETag and Last-Modified), not ours: requests with these are answered by the app.
_JUDGED_ELSEWHERE = ("If-Match", "If-Unmodified-Since")


def handed_on(request) -> bool:
    """May another server (nginx, S3) send the bytes of this request's answer? Only for a GET
    whose preconditions it would judge as the app does."""
    return request.method == "GET" and not any(
        name in request.headers for name in _JUDGED_ELSEWHERE
    )


def artifact_response(request, artifact: Artifact, *, hand_off=None) -> HttpResponse:
    """The answer to a GET or HEAD of ``artifact``: preconditions, then the range, decided here
    once, then the bytes. ``hand_off(request, artifact, requested)`` may answer instead with
    another server sending them (a 302 to S3, an X-Accel-Redirect to nginx) for a request it
    would judge as the app does (``handed_on``); None from it, and no ``hand_off``: the app
    sends them. Every answer carries the representation's headers."""
    blob = artifact.blob
    etag = f'"{blob.sha256}"'
    response = _answer(request, artifact, etag, hand_off)
    _representation_headers(response, artifact, etag)
    return response


def api_hand_off():
    """The artifact API's hand-off: with ARTIFACT_S3_REDIRECT, a 302 to S3."""
    return _s3_response if settings.ARTIFACT_S3_REDIRECT else None


def _answer(request, artifact: Artifact, etag: str, hand_off) -> HttpResponse:
    blob = artifact.blob
    if decided := precondition_status(request, etag):
        return HttpResponse(status=decided)
    try:
        requested = requested_range(request, etag, blob.size)
    except RangeNotSatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{blob.size}"
        return response
    if hand_off is not None and handed_on(request):
        handed = hand_off(request, artifact, requested)
        if handed is not None:
            return handed

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
    return response


# --- Signed links (/dl/): one set of headers, three ways to move the bytes --------------------
#
# SHARE_SERVE_MODE picks who sends the bytes: the app ("direct"), nginx from disk after an
# X-Accel-Redirect ("x-accel"), or S3 after a 302 to a pre-signed URL ("s3"). Preconditions
# (If-Match, If-None-Match), If-Range and ranges are decided by the app in every mode, so the
# answer does not depend on the mode: nginx sends the whole file or the one range decided, and
# what nginx or S3 would judge differently never reaches them (``handed_on``).

# Types a browser may show inline: they cannot run script. Everything else (HTML, SVG, XML,
# PDF, ...) is a download (Content-Disposition: attachment).
INLINE_SAFE_TYPES = frozenset({"text/plain", "image/png", "image/jpeg", "image/gif", "image/webp"})
# A Content-Type shown inline names one type and at most a charset, nothing a browser could read
# as something else: browsers take a comma-separated list's last type ("text/plain; x=y,
# text/html" is HTML to them), and the uploader chooses the artifact's Content-Type.
_INLINE_CONTENT_TYPE = re.compile(
    r"(?P<type>[a-z]+/[a-z.+-]+)\s*(?:;\s*charset=[a-z0-9._:-]{1,40}\s*)?", re.IGNORECASE
)


def _shown_inline(content_type: str) -> bool:
    found = _INLINE_CONTENT_TYPE.fullmatch(content_type.strip())
    return found is not None and found["type"].lower() in INLINE_SAFE_TYPES


def signed_headers(response: HttpResponse, artifact: Artifact) -> HttpResponse:
    """The headers every signed-link answer carries on top of the artifact API's own (which
    ``artifact_response`` has set)."""
    response["Content-Disposition"] = content_disposition_header(
        not _shown_inline(artifact.content_type), posixpath.basename(artifact.path)
    )
    response["Referrer-Policy"] = "no-referrer"
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Cache-Control"] = "private, no-cache"
    return response


# A Range header nginx reads exactly as ``byte_range`` does: one range, lower-case unit, no
# space, no number long enough to overflow nginx's off_t (it answers 416 where we cap).
_CANONICAL_RANGE = re.compile(r"bytes=(?:[0-9]{1,18}-[0-9]{0,18}|-[0-9]{1,18})")


def _x_accel_response(request, artifact: Artifact, requested) -> HttpResponse | None:
    """Hand the file to nginx: an ``internal`` location under SHARE_X_ACCEL_LOCATION aliases the
    artifact root. nginx only carries out what the app decided: the whole file goes to the
    location's ``full/`` twin, where nginx serves no ranges (``max_ranges 0``) whatever the
    request's Range says; one range goes to the ranged location, and only when the request
    spells it so that nginx reads the same bytes. None: the app answers itself."""
    blob = artifact.blob
    if not storage.blob_local_path(blob.storage_name):
        return None
    location = settings.SHARE_X_ACCEL_LOCATION.rstrip("/")
    if requested is None:
        location += "/full"
    elif not _CANONICAL_RANGE.fullmatch(request.headers.get("Range", "")):
        return None
    response = HttpResponse(content_type=artifact.content_type)
    # storage names are "blobs/ab/<sha256>.<hex>": nothing to escape.
    response["X-Accel-Redirect"] = f"{location}/{blob.storage_name}"
    return response


def _s3_response(request, artifact: Artifact, requested=None) -> HttpResponse | None:
    """A 302 to a pre-signed S3 GET (S3 serves the Range itself); None on local storage."""
    url = storage.blob_presigned_url(
        artifact.blob.storage_name,
        filename=posixpath.basename(artifact.path),
        expires=settings.ARTIFACT_REDIRECT_EXPIRES,
    )
    return None if url is None else HttpResponseRedirect(url)


def signed_artifact_response(request, artifact: Artifact) -> HttpResponse:
    """Answer a verified signed link for ``artifact`` in the configured serving mode.

    Preconditions and ranges are decided by ``artifact_response`` in every mode, so the answer
    does not depend on the mode: nginx is told exactly what to send, and a request nginx or S3
    would judge by validators of their own (If-Match, If-Unmodified-Since) is answered by the
    app."""
    hand_off = {"x-accel": _x_accel_response, "s3": _s3_response}.get(settings.SHARE_SERVE_MODE)
    return signed_headers(artifact_response(request, artifact, hand_off=hand_off), artifact)
