import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "artifactcourier.settings")

app = Celery("artifactcourier")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="artifactcourier.ping")
def ping() -> str:
    """A trivial task: proves a worker is consuming from the broker."""
    return "pong"
