"""A shorter middleware chain for requests that need none of the admin's machinery.

Signed links (``/dl/``) carry their credential in the URL: they read no session, no CSRF
token, no user and no message, and serve no static file. ``settings.LEAN_PATH_PREFIXES`` names
such paths; ``LeanPaths``, the first middleware of ``settings.MIDDLEWARE``, sends them through
``settings.LEAN_MIDDLEWARE`` (the full list without the middleware they do not need) instead
of the rest of the full chain. Everything around the chain is unchanged: the handler still
sends ``request_started``/``request_finished`` (database connections are checked and closed
there), sets the URLconf and logs 4xx/5xx answers; every middleware that sets a response
header (security headers, X-Frame-Options, Content-Length) is in both chains.

Synchronous only (the service is WSGI); one place for every lean path, no per-view copies.
"""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import convert_exception_to_response
from django.utils.module_loading import import_string


class _LeanHandler(BaseHandler):
    """Resolves and calls the view like Django's handler, behind ``LEAN_MIDDLEWARE`` only."""

    def load_middleware(self, is_async=False):
        if is_async:
            raise ImproperlyConfigured("The lean chain is synchronous (WSGI).")
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self._get_response)
        for path in reversed(settings.LEAN_MIDDLEWARE):
            middleware = import_string(path)(handler)
            # The same hooks Django's load_middleware collects, in the same order.
            if hasattr(middleware, "process_view"):
                self._view_middleware.insert(0, middleware.process_view)
            if hasattr(middleware, "process_template_response"):
                self._template_response_middleware.append(middleware.process_template_response)
            if hasattr(middleware, "process_exception"):
                self._exception_middleware.append(middleware.process_exception)
            handler = convert_exception_to_response(middleware)
        self._middleware_chain = handler


class LeanPaths:
    """Requests under ``LEAN_PATH_PREFIXES`` take the lean chain; all others the full one."""

    def __init__(self, get_response):
        self.get_response = get_response
        unknown = set(settings.LEAN_MIDDLEWARE) - set(settings.MIDDLEWARE)
        if unknown:
            raise ImproperlyConfigured(f"LEAN_MIDDLEWARE is not a part of MIDDLEWARE: {unknown}")
        self.prefixes = tuple(settings.LEAN_PATH_PREFIXES)
        self.lean = _LeanHandler()
        self.lean.load_middleware()

    def __call__(self, request):
        if request.path_info.startswith(self.prefixes):
            return self.lean._middleware_chain(request)
        return self.get_response(request)
