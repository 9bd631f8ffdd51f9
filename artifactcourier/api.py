"""API conventions shared by every app: the error shape and pagination (API.md "Conventions")."""

import logging

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
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
    body = {"detail": message, "code": code}
    if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict | list):
        body["errors"] = response.data
    response.data = body
    return response
