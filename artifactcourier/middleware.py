from django.http import JsonResponse
from django.utils.cache import patch_cache_control


class PrivateApiResponses:
    """API answers depend on the credential and may carry tokens shown once (build create,
    derive, rotate): no shared or browser cache may keep them. Responses that set their own
    Cache-Control (artifact downloads, with ETags) are left alone."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith("/api/v1/") and not response.has_header("Cache-Control"):
            patch_cache_control(response, private=True, no_store=True)
        return response


class TransferCodings:
    """Refuse a request body in a transfer coding we do not decode (RFC 9112 §6.1: 501).

    The server (gunicorn) removes ``chunked`` and passes any other coding (``gzip, chunked``)
    through in the header with the body still encoded; storing or parsing those bytes as they
    are would silently keep something other than what the client meant. Only ``chunked`` alone
    is accepted; ``Content-Encoding`` is a different matter, left to the views that support it.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        value = request.META.get("HTTP_TRANSFER_ENCODING")
        if value is not None:
            codings = [c.strip().lower() for c in value.split(",") if c.strip()]
            if codings != ["chunked"]:
                return JsonResponse(
                    {
                        "detail": "Only the chunked transfer coding is supported; send the body "
                        "with Content-Length or Transfer-Encoding: chunked. Nothing was stored.",
                        "code": "unsupported_transfer_coding",
                    },
                    status=501,
                )
        return self.get_response(request)
