"""The one place that decides whether a string is an acceptable artifact path."""

import unicodedata

from django.conf import settings

from .errors import InvalidArtifactPath


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
    for char in path:
        if char == "\\":
            raise InvalidArtifactPath("The artifact path contains a backslash; use '/'.")
        if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Zl", "Zp"}:
            raise InvalidArtifactPath(
                f"The artifact path contains a control character (U+{ord(char):04X})."
            )
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
