"""The one place artifact code asks whether a string is an acceptable artifact path or prefix.

The policy itself is ``artifactcourier.paths.path_problem`` (shared with ``tokens.access`` for
key and share prefixes); this module turns its verdict into the API's 400.
"""

from urllib.parse import quote

from django.conf import settings

from artifactcourier.paths import path_problem

from .errors import InvalidArtifactPath


def artifact_path_clean(path: str) -> str:
    """Return ``path`` if it is a relative, normalised artifact path, else raise with the reason.

    Paths become storage-independent names and URL segments, and are handed to other tools by
    downstream jobs, so they are refused rather than silently rewritten: ``a//b`` or ``./a``
    would otherwise make two spellings of one artifact.
    """
    if len(path) > settings.ARTIFACT_PATH_MAX_LENGTH:
        raise InvalidArtifactPath(
            f"The artifact path is longer than {settings.ARTIFACT_PATH_MAX_LENGTH} characters."
        )
    if problem := path_problem(path):
        raise InvalidArtifactPath(f"The artifact path {problem}.")
    _url_length_check(path, "artifact path", code="invalid_path")
    return path


def _url_length_check(path: str, what: str, *, code: str) -> None:
    # Measured as clients encode it: a character outside ASCII takes up to 9 bytes, a reserved
    # ASCII one ('?', '#', '%', ...) 3.
    encoded = len(quote(path, safe="/"))
    if encoded > settings.ARTIFACT_PATH_MAX_URL_BYTES:
        raise InvalidArtifactPath(
            f"The {what} takes {encoded} bytes in a URL (percent-encoded), more than "
            f"{settings.ARTIFACT_PATH_MAX_URL_BYTES}: no request could name it. Shorten it.",
            code=code,
        )


def artifact_prefix_clean(prefix: str) -> str:
    """Return ``prefix`` (a listing filter: any start of a path, ``dist`` matches ``dist-x/``) if
    it could start an artifact path, else raise with the reason: no artifact lies under it, and
    PostgreSQL refuses a NUL in any query."""
    if len(prefix) > settings.ARTIFACT_PATH_MAX_LENGTH:
        raise InvalidArtifactPath(
            f"The prefix is longer than {settings.ARTIFACT_PATH_MAX_LENGTH} characters.",
            code="invalid_prefix",
        )
    if problem := path_problem(prefix, prefix=True):
        raise InvalidArtifactPath(f"The prefix {problem}.", code="invalid_prefix")
    _url_length_check(prefix, "prefix", code="invalid_prefix")
    return prefix


def page_cursor(path: str, prefix: str) -> str:
    """Where a listing's next page starts, as its cursor says it: the last path shown, after the
    listing's ``prefix`` (which every path it lists starts with), so that a page link is no
    longer than the link to that path. Read back by ``page_after``."""
    return path.removeprefix(prefix)


def page_after(cursor: str, prefix: str) -> str:
    """The path a page starts after, from ``page_cursor``'s value: only a string that could be
    an artifact path (a NUL, which PostgreSQL refuses in any query, or a '..' raises
    InvalidArtifactPath before any query)."""
    return artifact_path_clean(prefix + cursor)
