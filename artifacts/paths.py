"""The one place that decides whether a string is an acceptable artifact path."""

import unicodedata

from django.conf import settings

from .errors import InvalidArtifactPath

_CONTROL_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def _control_character(text: str) -> str | None:
    """The first control (or invisible formatting) character in ``text``, as ``U+XXXX``."""
    for char in text:
        if unicodedata.category(char) in _CONTROL_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def artifact_path_clean(path: str) -> str:
    """Return ``path`` if it is a relative, normalised artifact path, else raise with the reason.

    Paths become storage-independent names and URL segments, and are handed to other tools by
    downstream jobs, so they are refused rather than silently rewritten: ``a//b`` or ``./a``
    would otherwise make two spellings of one artifact.
    """
    if not path:
        raise InvalidArtifactPath("The artifact path is empty.")
    if len(path) > settings.ARTIFACT_PATH_MAX_LENGTH:
        raise InvalidArtifactPath(
            f"The artifact path is longer than {settings.ARTIFACT_PATH_MAX_LENGTH} characters."
        )
    if "\\" in path:
        raise InvalidArtifactPath("The artifact path contains a backslash; use '/'.")
    if control := _control_character(path):
        raise InvalidArtifactPath(f"The artifact path contains a control character ({control}).")
    if path.startswith("/"):
        raise InvalidArtifactPath("The artifact path must be relative (no leading '/').")
    if path.endswith("/"):
        raise InvalidArtifactPath("The artifact path must name a file (no trailing '/').")
    for segment in path.split("/"):
        if segment == "":
            raise InvalidArtifactPath("The artifact path contains an empty segment ('//').")
        if segment in {".", ".."}:
            raise InvalidArtifactPath(f"The artifact path contains a '{segment}' segment.")
        if len(segment) > settings.ARTIFACT_PATH_SEGMENT_MAX_LENGTH:
            raise InvalidArtifactPath(
                f"A segment of the artifact path is longer than "
                f"{settings.ARTIFACT_PATH_SEGMENT_MAX_LENGTH} characters."
            )
    if unicodedata.normalize("NFC", path) != path:
        raise InvalidArtifactPath("The artifact path is not in Unicode normal form C.")
    return path


def artifact_prefix_clean(prefix: str) -> str:
    """Return ``prefix`` (a listing filter: any start of a path, ``dist`` matches ``dist-x/``) if
    it could start an artifact path, else raise with the reason. No path holds a control
    character, and PostgreSQL refuses a NUL in any query, so such a prefix is bad input."""
    if control := _control_character(prefix):
        raise InvalidArtifactPath(
            f"The prefix contains a control character ({control}).", code="invalid_prefix"
        )
    return prefix
