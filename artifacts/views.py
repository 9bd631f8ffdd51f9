import re
from urllib.parse import urlsplit, urlunsplit

from django.http import QueryDict
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.generics import ListAPIView
from rest_framework.pagination import Cursor
from rest_framework.response import Response
from rest_framework.views import APIView

from artifactcourier.api import KeysetPagination
from builds.models import Build
from builds.selectors import build_get_for_key
from tokens import services as token_services
from tokens.access import visible_artifacts
from tokens.authentication import client_ip
from tokens.scopes import Scope

from . import batch, services
from .downloads import api_hand_off, artifact_response
from .errors import InvalidArtifactPath
from .models import Artifact
from .paths import artifact_path_clean, artifact_prefix_clean, page_after, page_cursor
from .serializers import ArtifactSerializer

_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+(\s*;[ -~]*)?$")


def build_for_key(request, build_id: int) -> Build:
    return build_get_for_key(key=request.auth, build_id=build_id)


def artifacts_for_key(request, build: Build):
    return visible_artifacts(Artifact.objects.filter(build=build), request.auth).select_related(
        "blob"
    )


class PathPagination(KeysetPagination):
    """Keyset pages on the path, with links no longer than the link to the path they start
    after: the cursor is ``<f|r><offset>[.<position>]`` (forward or reverse; the position, the
    last path shown, after the listing's ``prefix``), and a link is encoded as a path is in a
    URL ('/' kept). DRF's own cursor (the whole path urlencoded, then base64) with every '/' of
    the query escaped made links of over 6000 bytes, refused by gunicorn (4094-byte request
    line), for a path within ARTIFACT_PATH_MAX_URL_BYTES."""

    _CURSOR = re.compile(r"(?P<direction>[fr])(?P<offset>[0-9]{1,9})(?:\.(?P<position>.*))?", re.S)

    def _prefix(self, request) -> str:
        return request.query_params.get("prefix", "")

    def encode_cursor(self, cursor):
        value = f"{'r' if cursor.reverse else 'f'}{cursor.offset}"
        if cursor.position is not None:
            value += "." + page_cursor(cursor.position, self._prefix(self.request))
        parts = urlsplit(self.base_url)
        query = QueryDict(parts.query, mutable=True)
        query[self.cursor_query_param] = value
        return urlunsplit(parts._replace(query=query.urlencode(safe="/")))

    def decode_cursor(self, request):
        """The page a cursor names, or 404 for one no link of ours carries: a position that is
        no artifact path (a NUL would fail the query on PostgreSQL), an offset past the cutoff."""
        value = request.query_params.get(self.cursor_query_param)
        if value is None:
            return None
        match = self._CURSOR.fullmatch(value)
        if match is None or int(match["offset"]) > self.offset_cutoff:
            raise NotFound(self.invalid_cursor_message)
        position = match["position"]
        if position is not None:
            try:
                position = page_after(position, self._prefix(request))
            except InvalidArtifactPath:
                raise NotFound(self.invalid_cursor_message) from None
        return Cursor(
            offset=int(match["offset"]), reverse=match["direction"] == "r", position=position
        )


class ArtifactListView(ListAPIView):
    required_scopes = {Scope.ARTIFACTS_READ}
    serializer_class = ArtifactSerializer
    # Paths are unique within a build: keyset pages on (build, path), the unique index.
    pagination_class = PathPagination

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
        return artifact_response(request, artifact, hand_off=api_hand_off())

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


class BatchArtifactSerializer(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()


class BatchResultSerializer(serializers.Serializer):
    artifacts = BatchArtifactSerializer(many=True)


class ArtifactBatchView(ArtifactView):
    """``POST …/artifacts/batch``: a tar stream, every regular file an artifact (all or none).

    The same URL also names a top-level artifact called ``batch``: GET and PUT behave exactly
    as for any other path (inherited), only POST is the batch."""

    required_scopes = {**ArtifactView.required_scopes, "POST": {Scope.ARTIFACTS_WRITE}}

    @extend_schema(exclude=True)
    def get(self, request, build_id: int, artifact_path: str = "batch"):
        return super().get(request, build_id, "batch")

    @extend_schema(exclude=True)
    def put(self, request, build_id: int, artifact_path: str = "batch"):
        return super().put(request, build_id, "batch")

    @extend_schema(
        operation_id="artifacts_batch_upload",
        request={"application/x-tar": OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter(
                "prefix", str, description="Directory the archive's files are stored under."
            ),
            OpenApiParameter(
                "Content-Encoding",
                str,
                OpenApiParameter.HEADER,
                enum=list(batch.ENCODINGS),
                description="gzip or zstd for a compressed archive.",
            ),
            OpenApiParameter(
                "X-Checksum-Sha256",
                str,
                OpenApiParameter.HEADER,
                description="SHA-256 of the body as sent; a mismatch stores nothing (400).",
            ),
        ],
        responses={
            201: BatchResultSerializer,
            200: OpenApiResponse(BatchResultSerializer, description="Every file was there."),
            400: OpenApiResponse(description="Not an acceptable archive; the reason in detail."),
            413: OpenApiResponse(description="A member, the file count or a quota is exceeded."),
        },
    )
    def post(self, request, build_id: int, artifact_path: str = "batch"):
        build = build_for_key(request, build_id)
        media_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if media_type != "application/x-tar":
            raise exceptions.UnsupportedMediaType(media_type or "(none)")
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "identity").strip().lower()
        if encoding not in batch.ENCODINGS:
            raise exceptions.UnsupportedMediaType(
                media_type, f"Content-Encoding must be one of {', '.join(batch.ENCODINGS)}."
            )
        expected = services.checksum_clean(request.headers.get("X-Checksum-Sha256"))
        prefix = request.query_params.get("prefix", "")
        ip = client_ip(request)

        def path_check(path: str) -> None:
            token_services.key_path_check(
                key=request.auth, artifact_path=path, ip=ip, path=request.path
            )

        result = batch.artifacts_store_batch(
            build=build,
            stream=request.META["wsgi.input"],
            content_length=_content_length(request),
            encoding=encoding,
            prefix=prefix,
            expected_sha256=expected,
            key=request.auth,
            path_check=path_check,
        )
        body = {
            "artifacts": [
                {"path": a.path, "size": a.size, "sha256": a.sha256} for a in result.artifacts
            ]
        }
        return Response(
            body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        )
