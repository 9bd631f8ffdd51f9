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
