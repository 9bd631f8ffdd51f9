from django.core.exceptions import ImproperlyConfigured
from rest_framework import exceptions
from rest_framework.permissions import BasePermission

from .authentication import client_ip
from .errors import KeyConflict
from .models import ApiKey
from .services import key_denied


def required_scopes_for(view, method: str) -> frozenset:
    """The scopes ``view`` declares for ``method``: a set, or a dict keyed by HTTP method.

    A method the view does not implement is the client's mistake (405). A method it implements
    but declares no scopes for is a programming error, and it fails closed.
    """
    handler = "get" if method == "HEAD" else method.lower()
    if not hasattr(view, handler):
        raise exceptions.MethodNotAllowed(method)
    if method == "OPTIONS":
        # Authentication only: OPTIONS answers no data (DEFAULT_METADATA_CLASS is None).
        return frozenset()
    declared = getattr(view, "required_scopes", None)
    if isinstance(declared, dict):
        declared = declared.get("GET" if method == "HEAD" else method)
    if declared is None:
        raise ImproperlyConfigured(
            f"{type(view).__name__} declares no required_scopes for {method}: refusing the request."
        )
    return frozenset(declared)


def _lost_only_to_finished_build(key: ApiKey, missing, view) -> bool:
    """True when the key was granted ``missing`` and lost it only because its build finished,
    on a view that treats that as a conflict (finishing twice is 409, not a stolen key)."""
    return (
        getattr(view, "conflict_if_build_finished", False)
        and key.build is not None
        and not key.build.is_running
        and not key.is_revoked()
        and not key.is_expired()
        and missing <= set(key.scopes)
    )


class HasScope(BasePermission):
    """The key on ``request.auth`` must hold every scope the view requires, *effective now*."""

    def has_permission(self, request, view) -> bool:
        required = required_scopes_for(view, request.method)
        key = request.auth
        if not isinstance(key, ApiKey):
            raise exceptions.NotAuthenticated("Authentication credentials were not provided.")
        missing = required - key.effective_scopes
        if missing and _lost_only_to_finished_build(key, missing, view):
            raise KeyConflict(
                f"Build #{key.build.number} has already finished ({key.build.state}).",
                code="build_finished",
            )
        if missing:
            raise key_denied(key=key, missing=missing, ip=client_ip(request), path=request.path)
        return True


class HasScopeOrStaff(HasScope):
    """Like HasScope, but a staff user signed in to the admin (session) may act as well.

    Views using it also list SessionAuthentication, which enforces CSRF for the session.
    """

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not isinstance(request.auth, ApiKey) and user is not None and user.is_authenticated:
            required_scopes_for(view, request.method)  # still fail closed on a forgetful view
            if user.is_active and user.is_staff:
                return True
            raise exceptions.PermissionDenied(
                "Only staff users, or a key with the required scope, may do this.",
                code="staff_only",
            )
        return super().has_permission(request, view)
