import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "artifactcourier.settings")
application = get_wsgi_application()

# The web processes only: a statement of a request gets DATABASE_QUERY_TIMEOUT seconds.
from artifactcourier.query_deadline import install  # noqa: E402

install()
