"""API conventions shared by every app: the error shape and pagination (API.md "Conventions")."""

from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination
from rest_framework.views import exception_handler as drf_exception_handler


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000


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

    Validation errors keep the full per-field structure under ``errors``.
    """
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
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
