import re

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from builds.models import Build
from builds.selectors import build_get_for_key
from tokens import services as token_services
from tokens.access import visible_artifacts
from tokens.authentication import client_ip
from tokens.scopes import Scope

from . import services
from .downloads import artifact_response
from .models import Artifact
from .paths import artifact_path_clean, artifact_prefix_clean
from .serializers import ArtifactSerializer

_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+(\s*;[ -~]*)?$")


def build_for_key(request, build_id: int) -> Build:
    return build_get_for_key(key=request.auth, build_id=build_id)


def artifacts_for_key(request, build: Build):
    return visible_artifacts(Artifact.objects.filter(build=build), request.auth).select_related(
        "blob"
    )


class ArtifactListView(ListAPIView):
    required_scopes = {Scope.ARTIFACTS_READ}
    serializer_class = ArtifactSerializer

    def get_queryset(self):
        build = build_for_key(self.request, self.kwargs["build_id"])
        prefix = artifact_prefix_clean(self.request.query_params.get("prefix", ""))
        return artifacts_for_key(self.request, build).with_prefix(prefix)

    @extend_schema(
        parameters=[OpenApiParameter("prefix", str, description="Only paths starting with this.")]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ArtifactView(APIView):
    required_scopes = {"GET": {Scope.ARTIFACTS_READ}, "PUT": {Scope.ARTIFACTS_WRITE}}
    # The body is read by the service straight from the WSGI input, never by a parser.
    parser_classes = []

    @extend_schema(
        responses={
            (200, "application/octet-stream"): OpenApiTypes.BINARY,
            (206, "application/octet-stream"): OpenApiTypes.BINARY,
            304: OpenApiResponse(description="If-None-Match matched the ETag (= sha256)."),
            400: OpenApiResponse(description="Not a valid artifact path; the reason in detail."),
            416: OpenApiResponse(description="Range not satisfiable."),
        },
        parameters=[
            OpenApiParameter("Range", str, OpenApiParameter.HEADER, description="bytes=a-b"),
            OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER),
        ],
    )
    def get(self, request, build_id: int, artifact_path: str):
        build = build_for_key(request, build_id)
        # A path PUT would refuse cannot exist; say why, as PUT does, rather than query it.
        path = artifact_path_clean(artifact_path)
        artifact = get_object_or_404(artifacts_for_key(request, build), path=path)
        return artifact_response(request, artifact)

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter(
                "X-Checksum-Sha256",
                str,
                OpenApiParameter.HEADER,
                description="Lowercase hex SHA-256 of the body; a mismatch stores nothing (400).",
            )
        ],
        responses={201: ArtifactSerializer, 200: ArtifactSerializer},
    )
    def put(self, request, build_id: int, artifact_path: str):
        build = build_for_key(request, build_id)
        path = artifact_path_clean(artifact_path)
        token_services.key_path_check(
            key=request.auth, artifact_path=path, ip=client_ip(request), path=request.path
        )
        stored = services.artifact_store(
            build=build,
            path=path,
            stream=request.META["wsgi.input"],
            content_length=_content_length(request),
            content_type=_content_type(request),
            expected_sha256=request.headers.get("X-Checksum-Sha256"),
            key=request.auth,
        )
        return Response(
            ArtifactSerializer(stored.artifact).data,
            status=status.HTTP_201_CREATED if stored.created else status.HTTP_200_OK,
        )


def _content_length(request) -> int | None:
    """The body's length, or None when it comes with chunked transfer encoding (read to EOF)."""
    if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    value = request.META.get("CONTENT_LENGTH") or "0"
    # RFC 9110 §8.6: 1*DIGIT, and only ASCII ones ("²".isdigit() is true). int() also refuses
    # more digits than sys.get_int_max_str_digits().
    if value.isascii() and value.isdigit():
        try:
            return int(value)
        except ValueError:
            pass
    raise exceptions.ParseError("Content-Length must be a number of bytes.")


def _content_type(request) -> str:
    value = request.META.get("CONTENT_TYPE", "").strip()
    if not value:
        return "application/octet-stream"
    if len(value) > 255 or not _CONTENT_TYPE.match(value):
        raise exceptions.ParseError("Content-Type is not a valid media type.")
    return value
