import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from tokens.permissions import HasScope
from tokens.scopes import Scope

pytestmark = pytest.mark.django_db


class ForgetfulView(APIView):
    """A view whose author forgot required_scopes."""

    def get(self, request):
        return Response({"secret": "served"})


class ReadOnlyDeclaredView(APIView):
    """Declares GET; implements POST as well but forgot to declare it; has no DELETE."""

    required_scopes = {"GET": {Scope.ARTIFACTS_READ}}

    def get(self, request):
        return Response({})

    def post(self, request):
        return Response({"written": True})


def request_with_key(key, method="get"):
    request = getattr(APIRequestFactory(), method)("/anything")
    request.auth = key
    return request


def test_view_without_required_scopes_fails_closed(build):
    with pytest.raises(ImproperlyConfigured):
        HasScope().has_permission(request_with_key(build.key), ForgetfulView())


def test_method_missing_from_a_per_method_declaration_fails_closed(build):
    with pytest.raises(ImproperlyConfigured):
        HasScope().has_permission(request_with_key(build.key, "post"), ReadOnlyDeclaredView())


def test_a_method_the_view_does_not_implement_is_405_not_a_server_error(build):
    with pytest.raises(MethodNotAllowed):
        HasScope().has_permission(request_with_key(build.key, "delete"), ReadOnlyDeclaredView())


def test_head_uses_the_get_declaration(build):
    assert HasScope().has_permission(request_with_key(build.key, "head"), ReadOnlyDeclaredView())


def test_forgetful_view_answers_500_not_200_through_the_stack(build):
    """Fail closed end to end: the request is refused, never served."""
    view = ForgetfulView.as_view()
    request = APIRequestFactory().get("/x", HTTP_AUTHORIZATION=f"Bearer {build.token}")
    with pytest.raises(ImproperlyConfigured):
        view(request)
