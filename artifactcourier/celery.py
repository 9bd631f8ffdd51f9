import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "artifactcourier.settings")

app = Celery("artifactcourier")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="artifactcourier.ping")
def ping() -> str:
    """A trivial task: proves a worker is consuming from the broker."""
    return "pong"


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_worker_logs(logger, **kwargs) -> None:
    """The worker installs handlers of its own (on the root and task loggers): give each the
    service's one redaction, as LOGGING does for Django's."""
    from tokens.logging import RedactSecretsFilter

    for handler in logger.handlers:
        if not any(isinstance(f, RedactSecretsFilter) for f in handler.filters):
            handler.addFilter(RedactSecretsFilter())
