"""Floors for uploads under Django: the same gunicorn serving a Django project that does
nothing but read the body and answer 201, through a plain Django view (``/django/...``) and
through a DRF view with no authentication (``/drf/...``). No middleware, no database, no
disk: what any upload to a Django (and DRF) service costs before it authenticates, hashes or
stores anything (bench/small.py)."""

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-floor-only-not-a-secret-0123456789abcdef",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=["rest_framework"],
    DATABASES={},
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "UNAUTHENTICATED_USER": None,
    },
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

BODY = {"stored": False}


@csrf_exempt
def plain(request, rest):
    request.body  # noqa: B018 (read, as an upload is)
    return JsonResponse(BODY, status=201)


class Drf(APIView):
    def put(self, request, rest):
        request.stream.read()
        return Response(BODY, status=201)


urlpatterns = [path("django/<path:rest>", plain), path("drf/<path:rest>", Drf.as_view())]
application = get_wsgi_application()
