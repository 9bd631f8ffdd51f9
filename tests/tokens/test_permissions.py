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


# --- behaviours a mutation of the access core survived until these tests ----------------------


def test_a_build_made_untrusted_after_its_key_was_minted_loses_keys_mint(api, build):
    """The admin turns ``trusted`` off (a mislabelled fork): keys already minted lose keys:mint
    at once, the build's own and those derived with it."""
    from builds.models import Build

    client = api.as_key(build.token)
    minted = client.post(
        "/api/v1/keys/", {"scopes": ["keys:mint", "artifacts:read"]}, format="json"
    )
    assert minted.status_code == 201
    Build.objects.filter(pk=build.build.pk).update(trusted=False)
    for token in (build.token, minted.json()["token"]):
        response = api.as_key(token).post(
            "/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json"
        )
        assert response.status_code == 403
        assert response.json()["code"] == "untrusted_build"
    assert "keys:mint" not in api.as_key(build.token).get("/api/v1/keys/self").json()["scopes"]


def test_finishing_a_finished_build_without_ever_holding_build_finish_is_an_audited_403(api, build):
    """409 build_finished is for the build's own key retrying; a key never granted build:finish
    is refused (and audited) like any other missing scope."""
    from builds.services import build_finish
    from tokens.models import AuditEvent

    reader = api.as_key(build.token).post(
        "/api/v1/keys/", {"scopes": ["artifacts:read"]}, format="json"
    )
    build_finish(build=build.build, state="succeeded")
    client = api.as_key(reader.json()["token"])
    response = client.post(f"/api/v1/builds/{build.build.pk}/finish", {"state": "failed"})
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"
    event = AuditEvent.objects.get(action="write_denied", key_id=reader.json()["id"])
    assert event.detail["missing"] == ["build:finish"]
