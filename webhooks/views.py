from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from artifactcourier.api import Pagination
from builds.models import Project
from tokens.access import manageable_projects
from tokens.authentication import ApiKeyAuthentication
from tokens.permissions import HasScopeOrStaff
from tokens.scopes import Scope

from . import services
from .models import Subscription
from .serializers import (
    DeliverySerializer,
    SigningSecretSerializer,
    SubscriptionCreatedSerializer,
    SubscriptionCreateSerializer,
    SubscriptionSerializer,
)


class _ManageWebhooks(APIView):
    """A project key with webhooks:manage, or a staff user signed in to the admin."""

    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [HasScopeOrStaff]
    required_scopes = {Scope.WEBHOOKS_MANAGE}

    def project(self, project_slug: str) -> Project:
        request = self.request
        projects = manageable_projects(Project.objects, key=request.auth, user=request.user)
        return get_object_or_404(projects, slug=project_slug)

    def subscription(self, project_slug: str, subscription_id: int) -> Subscription:
        project = self.project(project_slug)
        return get_object_or_404(Subscription.objects.filter(project=project), pk=subscription_id)

    def actor(self) -> str:
        if self.request.auth is not None:
            return f"key:{self.request.auth.pk}"
        return f"user:{self.request.user.get_username()}"


class WebhookListView(_ManageWebhooks):
    @extend_schema(responses=SubscriptionSerializer(many=True))
    def get(self, request, project_slug: str):
        queryset = Subscription.objects.filter(project=self.project(project_slug)).order_by("id")
        paginator = Pagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(SubscriptionSerializer(page, many=True).data)

    @extend_schema(
        request=SubscriptionCreateSerializer, responses={201: SubscriptionCreatedSerializer}
    )
    def post(self, request, project_slug: str):
        project = self.project(project_slug)
        params = SubscriptionCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        created = services.subscription_create(project=project, **params.validated_data)
        body = SubscriptionSerializer(created.subscription).data
        body["signing_secret"] = created.signing_secret
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookDetailView(_ManageWebhooks):
    @extend_schema(responses=SubscriptionSerializer)
    def get(self, request, project_slug: str, subscription_id: int):
        subscription = self.subscription(project_slug, subscription_id)
        return Response(SubscriptionSerializer(subscription).data)

    @extend_schema(responses={204: None})
    def delete(self, request, project_slug: str, subscription_id: int):
        subscription = self.subscription(project_slug, subscription_id)
        services.subscription_delete(subscription=subscription, actor=self.actor())
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretView(_ManageWebhooks):
    @extend_schema(request=None, responses={201: SigningSecretSerializer})
    def post(self, request, project_slug: str, subscription_id: int):
        subscription = self.subscription(project_slug, subscription_id)
        rotated = services.subscription_rotate_secret(subscription=subscription)
        body = {
            "signing_secret": rotated.signing_secret,
            "previous_secret_expires_at": rotated.previous_secret_expires_at,
        }
        return Response(SigningSecretSerializer(body).data, status=status.HTTP_201_CREATED)


class WebhookDeliveriesView(_ManageWebhooks):
    @extend_schema(responses=DeliverySerializer(many=True))
    def get(self, request, project_slug: str, subscription_id: int):
        subscription = self.subscription(project_slug, subscription_id)
        queryset = subscription.deliveries.prefetch_related("attempts").order_by("-id")
        paginator = Pagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(DeliverySerializer(page, many=True).data)
