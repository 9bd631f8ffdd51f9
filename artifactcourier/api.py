"""API conventions shared by every app: the error shape and pagination (API.md "Conventions")."""

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class DatabaseUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is unavailable; nothing was changed. Retry later."
    default_code = "unavailable"


def _is_unavailable(exc: Exception) -> bool:
    """The database could not be reached or dropped the connection: the server's condition, so
    a 503, not a 500. An integrity or programming error is a bug and stays a 500."""
    return isinstance(exc, OperationalError | InterfaceError) and not isinstance(
        exc, exceptions.APIException
    )


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000


class KeysetPagination(CursorPagination):
    """Pages of a listing ordered by a unique key: each page is ``WHERE key > <last key of the
    previous page> ORDER BY key LIMIT n``, an index range scan, so the last page of 10^5 rows
    costs what the first does (no ``OFFSET`` to skip, no ``COUNT(*)``). Clients follow the
    opaque ``next`` / ``previous`` URLs. Views set ``ordering`` to their unique key."""

    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = "path"


def _first_message(detail) -> tuple[str, str]:
    """Walk a nested DRF error structure down to its first (message, code)."""
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        message, code = _first_message(value)
        return (message if field == "non_field_errors" else f"{field}: {message}"), code
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail), getattr(detail, "code", "error") or "error"


# Error messages often quote the input ("\"<value>\" is not a valid choice."): a 100 KB value
# must not come back twice in a 400. Every message and per-field structure is bounded here, the
# one place all API errors pass, so no serializer or service has to remember it.
ERROR_TEXT_MAX_CHARS = 1000
ERROR_ITEMS_MAX = 20


def _bounded(value):
    if isinstance(value, str):
        if len(value) <= ERROR_TEXT_MAX_CHARS:
            return value
        return value[:ERROR_TEXT_MAX_CHARS] + f"… ({len(value)} characters)"
    if isinstance(value, dict):
        items = list(value.items())[:ERROR_ITEMS_MAX]
        return {_bounded(str(k)): _bounded(v) for k, v in items}
    if isinstance(value, list | tuple):
        return [_bounded(v) for v in value[:ERROR_ITEMS_MAX]]
    return value


def exception_handler(exc, context):
    """Render every API error as ``{"detail": "<sentence>", "code": "<machine_code>"}``.

    Validation errors keep the full per-field structure under ``errors``. A dependency that is
    down or too slow (object store, database) is a 503 with Retry-After: a client may retry.
    """
    if isinstance(exc, DatabaseError) and _is_unavailable(exc):
        logger.warning("database unavailable: %s", type(exc).__name__)
        exc = DatabaseUnavailable()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if response.status_code == 503 and "Retry-After" not in response:
        response["Retry-After"] = str(settings.DEPENDENCY_RETRY_AFTER_SECONDS)
    if response.status_code == 404:
        # Django's Http404 names the model ("No Build matches the given query."): say less.
        response.data = {"detail": "Not found.", "code": "not_found"}
        return response
    detail = exc.detail if isinstance(exc, exceptions.APIException) else response.data
    message, code = _first_message(detail)
    body = {"detail": _bounded(message), "code": code}
    if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict | list):
        body["errors"] = _bounded(response.data)
    response.data = body
    return response


# --- Errors raised before any API view runs ---------------------------------------------------
# Django answers some requests itself: no URL matched (404), a body over
# DATA_UPLOAD_MAX_MEMORY_SIZE (RequestDataTooBig), a Host not in ALLOWED_HOSTS (DisallowedHost)
# or another SuspiciousOperation (400), a CSRF refusal (403), an uncaught exception (500). Under
# /api/ those answers keep the API's error shape too; elsewhere (admin, share pages) Django's
# own pages stay.

_DJANGO_ERRORS = {
    400: ("The request is malformed.", "bad_request"),
    403: ("Forbidden.", "permission_denied"),
    404: ("Not found.", "not_found"),
    500: ("Internal server error.", "server_error"),
}


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def _api_error(status_code: int) -> JsonResponse:
    detail, code = _DJANGO_ERRORS[status_code]
    return JsonResponse({"detail": detail, "code": code}, status=status_code)


def bad_request(request, exception=None, **kwargs):
    if not _is_api(request):
        return defaults.bad_request(request, exception, **kwargs)
    if isinstance(exception, RequestDataTooBig):
        # RFC 9110 §15.5.14: the content is larger than the server will process.
        return JsonResponse(
            {
                "detail": "The request body is larger than "
                f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
                "code": "request_too_large",
            },
            status=413,
        )
    return _api_error(400)


def permission_denied(request, exception=None, **kwargs):
    if not _is_api(request):
        return defaults.permission_denied(request, exception, **kwargs)
    return _api_error(403)


def page_not_found(request, exception=None, **kwargs):
    if not _is_api(request):
        return defaults.page_not_found(request, exception, **kwargs)
    return _api_error(404)


def server_error(request, **kwargs):
    if not _is_api(request):
        return defaults.server_error(request, **kwargs)
    return _api_error(500)
