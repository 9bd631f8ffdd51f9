from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from artifactcourier.api import Pagination
from tokens import services as token_services
from tokens.access import manageable_projects, visible_projects
from tokens.authentication import ApiKeyAuthentication, client_ip
from tokens.permissions import HasScopeOrStaff
from tokens.scopes import Scope
from tokens.serializers import DeployTokenRotateSerializer, RotatedDeployTokenSerializer

from . import services
from .models import Build, Project
from .selectors import build_get_for_key
from .serializers import (
    BuildCreatedSerializer,
    BuildCreateSerializer,
    BuildFinishSerializer,
    BuildSerializer,
    StatusCheckSerializer,
    StatusReportSerializer,
)
from .statuses import status_report, statuses_latest


def build_for_key(request, build_id: int) -> Build:
    return build_get_for_key(key=request.auth, build_id=build_id, with_totals=True)


class BuildCreateView(APIView):
    required_scopes = {Scope.BUILDS_CREATE}

    @extend_schema(request=BuildCreateSerializer, responses={201: BuildCreatedSerializer})
    def post(self, request, project_slug: str):
        project = get_object_or_404(
            visible_projects(Project.objects, request.auth), slug=project_slug
        )
        params = BuildCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        created = services.build_create(project=project, **params.validated_data)
        body = BuildSerializer(created.build).data
        body["key"] = {
            "id": created.key.pk,
            "token": created.token,
            "scopes": created.key.scopes,
            "expires_at": created.key.expires_at,
        }
        if created.deploy_key is not None:
            body["deploy_token"] = {
                "id": created.deploy_key.pk,
                "token": created.deploy_token,
                "expires_at": created.deploy_key.expires_at,
            }
        return Response(body, status=status.HTTP_201_CREATED)


class BuildDetailView(APIView):
    required_scopes = {Scope.ARTIFACTS_READ}

    @extend_schema(responses=BuildSerializer)
    def get(self, request, build_id: int):
        return Response(BuildSerializer(build_for_key(request, build_id)).data)


class BuildFinishView(APIView):
    required_scopes = {Scope.BUILD_FINISH}
    # A build key retrying finish on its finished build gets 409, not a tripwire-counted 403.
    conflict_if_build_finished = True

    @extend_schema(request=BuildFinishSerializer, responses=BuildSerializer)
    def post(self, request, build_id: int):
        build = build_for_key(request, build_id)
        params = BuildFinishSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        finished = services.build_finish(
            build=build, state=Build.State(params.validated_data["state"]), key=request.auth
        )
        # ``build`` may be the key's own, loaded at authentication: bring it up to date.
        build.state, build.finished_at = finished.state, finished.finished_at
        return Response(BuildSerializer(build).data)


class DeployTokenRotateView(APIView):
    """Rotate the project's deploy token: a staff user (admin session) or a project key with
    tokens:manage. The old token keeps working for the grace period; a retry within it answers
    the same new token (200 instead of 201)."""

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [HasScopeOrStaff]
    required_scopes = {Scope.TOKENS_MANAGE}

    @extend_schema(
        request=DeployTokenRotateSerializer,
        responses={
            201: RotatedDeployTokenSerializer,
            200: RotatedDeployTokenSerializer,
            409: OpenApiResponse(
                description="A rotation within the grace period asked for other parameters."
            ),
        },
    )
    def post(self, request, project_slug: str):
        projects = manageable_projects(Project.objects, key=request.auth, user=request.user)
        project = get_object_or_404(projects, slug=project_slug)
        params = DeployTokenRotateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        user = request.user if request.auth is None else None
        rotated = token_services.deploy_token_rotate(
            project=project,
            actor=f"user:{user.get_username()}" if user else f"key:{request.auth.pk}",
            created_by=user,
            **params.validated_data,
        )
        return Response(
            RotatedDeployTokenSerializer(rotated).data,
            status=status.HTTP_201_CREATED if rotated.created else status.HTTP_200_OK,
        )


class BuildStatusesView(APIView):
    """Downstream verdicts: a key with build:status reports, a reader lists the latest per
    context."""

    required_scopes = {"GET": {Scope.ARTIFACTS_READ}, "POST": {Scope.BUILD_STATUS}}

    @extend_schema(responses=StatusCheckSerializer(many=True))
    def get(self, request, build_id: int):
        build = build_get_for_key(key=request.auth, build_id=build_id)
        paginator = Pagination()
        page = paginator.paginate_queryset(statuses_latest(build=build), request, view=self)
        return paginator.get_paginated_response(StatusCheckSerializer(page, many=True).data)

    @extend_schema(request=StatusReportSerializer, responses={201: StatusCheckSerializer})
    def post(self, request, build_id: int):
        build = build_get_for_key(key=request.auth, build_id=build_id)
        params = StatusReportSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        status_check = status_report(
            build=build, key=request.auth, ip=client_ip(request), **params.validated_data
        )
        return Response(StatusCheckSerializer(status_check).data, status=status.HTTP_201_CREATED)
