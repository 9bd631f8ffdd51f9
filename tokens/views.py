from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from .serializers import KeySerializer


class KeySelfView(APIView):
    """Any live key may introspect itself (its effective scopes, expiry, binding)."""

    required_scopes: set = set()

    @extend_schema(responses=KeySerializer)
    def get(self, request):
        return Response(KeySerializer(request.auth).data)
