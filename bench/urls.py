from django.urls import include, path
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from artifactcourier import urls as app_urls
from builds.models import Build
from builds.serializers import BuildSerializer
from builds.urls import urlpatterns as build_urlpatterns
from builds.views import BuildDetailView


class OpenBuildDetailView(BuildDetailView):
    """The same view and serializer with authentication and permissions switched off."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request, build_id: int):
        build = Build.objects.select_related("project").get(pk=build_id)
        return Response(BuildSerializer(build).data)


# The open twin sits in the same include, right beside the real route, so URL resolution
# costs both the same.
open_route = path("open/builds/<int:build_id>/", OpenBuildDetailView.as_view())
urlpatterns = []
for pattern in app_urls.urlpatterns:
    module = getattr(pattern, "urlconf_module", None)
    if getattr(module, "__name__", "") == "builds.urls":
        pattern = path("api/v1/", include([*build_urlpatterns, open_route]))
    urlpatterns.append(pattern)
