from django.contrib import admin
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .landing import landing


def healthz(request):
    """The process is up (no dependency checked: that is /readyz)."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """The process can serve: its database answers (within the query deadline on PostgreSQL).
    A load balancer takes a process out of rotation on 503; no secret or detail is shown."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        response = JsonResponse({"status": "unavailable", "database": "unavailable"}, status=503)
    else:
        response = JsonResponse({"status": "ok", "database": "ok"})
    response["Cache-Control"] = "no-store"
    return response


urlpatterns = [
    path("", landing, name="landing"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("tokens.urls")),
    path("api/v1/", include("builds.urls")),
    path("api/v1/", include("artifacts.urls")),
    path("dl/", include("artifacts.dl_urls")),
    path("api/v1/", include("webhooks.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

# Django's own error answers, in the API's error shape under /api/ (artifactcourier.api).
handler400 = "artifactcourier.api.bad_request"
handler403 = "artifactcourier.api.permission_denied"
handler404 = "artifactcourier.api.page_not_found"
handler500 = "artifactcourier.api.server_error"
