"""The service's URLs, plus the naive upload the streamed PUT is compared with."""

import uuid

from django.core.files.storage import default_storage
from django.urls import path
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from artifactcourier.urls import urlpatterns as app_urlpatterns


class NaiveMultipartUpload(APIView):
    """What a DRF tutorial does: a multipart form parsed by DRF, then default_storage.save."""

    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [MultiPartParser]

    def post(self, request):
        upload = request.data["file"]
        name = default_storage.save(f"naive/{uuid.uuid4().hex}", upload)
        return Response({"name": name, "size": upload.size}, status=201)


urlpatterns = [*app_urlpatterns, path("naive/upload", NaiveMultipartUpload.as_view())]
