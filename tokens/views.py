from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from . import services
from .authentication import client_ip
from .scopes import Scope
from .serializers import DerivedKeySerializer, KeyDeriveSerializer, KeySerializer


class KeySelfView(APIView):
    """Any live key may introspect itself (its effective scopes, expiry, binding, last use)."""

    required_scopes: set = set()

    @extend_schema(responses=KeySerializer)
    def get(self, request):
        return Response(KeySerializer(request.auth).data)


class KeyDeriveView(APIView):
    """Derive a narrower key from the caller's (a subset of its effective scopes, no longer
    lived, the same resource or narrower)."""

    required_scopes = {Scope.KEYS_MINT}

    @extend_schema(request=KeyDeriveSerializer, responses={201: DerivedKeySerializer})
    def post(self, request):
        params = KeyDeriveSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        key, token = services.key_derive(
            parent=request.auth, ip=client_ip(request), **params.validated_data
        )
        key.token = token
        return Response(DerivedKeySerializer(key).data, status=status.HTTP_201_CREATED)


class KeyRevokeView(APIView):
    """Revoke the caller's own key or any key derived from it, and everything below it; a key
    with tokens:manage also its project's deploy tokens. A deploy token cannot revoke itself."""

    required_scopes: set = set()

    @extend_schema(responses={204: None})
    def delete(self, request, key_id: int):
        services.key_revoke_by(
            caller=request.auth, key_id=key_id, ip=client_ip(request), path=request.path
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
