"""Domain errors of the credential layer; the API's exception handler renders them."""

from rest_framework import exceptions, status


class InvalidCredential(exceptions.AuthenticationFailed):
    default_detail = "Invalid API token."
    default_code = "invalid_token"


class KeyForbidden(exceptions.PermissionDenied):
    default_code = "forbidden"


class KeyConflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
