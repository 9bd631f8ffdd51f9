"""Domain errors of the artifact layer; the API's exception handler renders them."""

from rest_framework import exceptions, status


class InvalidArtifactPath(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Invalid artifact path."
    default_code = "invalid_path"


class InvalidArchive(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The body is not an acceptable tar archive; nothing was stored."
    default_code = "invalid_archive"


class ChecksumMismatch(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The body's SHA-256 does not match X-Checksum-Sha256; nothing was stored."
    default_code = "checksum_mismatch"


class IncompleteBody(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The request body ended before Content-Length bytes; nothing was stored."
    default_code = "incomplete_body"


class BodyStalled(exceptions.APIException):
    # RFC 9110 §15.5.9: the server did not receive a complete request in the time it was
    # prepared to wait. The client may retry; the connection is closed.
    status_code = status.HTTP_408_REQUEST_TIMEOUT
    default_detail = "The request body stopped arriving; nothing was stored."
    default_code = "body_stalled"


class ArtifactConflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This path already holds different bytes; artifacts are immutable."
    default_code = "artifact_exists"


class TooManyShares(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This build has too many live shares."
    default_code = "too_many_shares"


class QuotaExceeded(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The artifact is over quota."
    default_code = "quota_exceeded"


class BuildNotWritable(exceptions.PermissionDenied):
    default_detail = "The build has finished: its artifacts are read-only."
    default_code = "build_finished"


class BlobVanished(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The stored copy of these bytes was purged during the upload; retry it."
    default_code = "retry"


class StorageFull(exceptions.APIException):
    # RFC 4918 §11.5: the server cannot store the representation. The upload is discarded.
    status_code = status.HTTP_507_INSUFFICIENT_STORAGE
    default_detail = "The artifact store is out of space; nothing was stored. Try again later."
    default_code = "storage_full"


class DependencyUnavailable(exceptions.APIException):
    """The object store (or another service we depend on) is down, refused, or did not answer
    within its timeouts: the request may succeed later. The API adds Retry-After."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The artifact storage is unavailable; nothing was changed. Retry later."
    default_code = "unavailable"
