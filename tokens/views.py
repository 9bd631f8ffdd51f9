from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from . import services
from .access import revocable_keys
from .authentication import client_ip
from .models import ApiKey
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
    """Revoke the caller's own key or any key derived from it, and everything below it."""

    required_scopes: set = set()

    @extend_schema(responses={204: None})
    def delete(self, request, key_id: int):
        key = get_object_or_404(revocable_keys(ApiKey.objects, request.auth), pk=key_id)
        services.key_revoke(key=key, reason="revoked via API", actor=f"key:{request.auth.pk}")
        return Response(status=status.HTTP_204_NO_CONTENT)
