import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "artifactcourier.settings")


def _redis_channels_of_a_lost_connection_fail_as_disconnected() -> None:
    """When a worker loses the broker, Celery (5.7) collects the consumer's connection, which
    detaches its transport, and then closes it. Closing a Redis channel puts back the messages
    it still holds unacknowledged (a task running, acks_late), and acking one once its task
    ends goes through the channel too: both need the transport's connection details, gone by
    then, so kombu raises AttributeError. That is no connection error: the worker stops
    ("Unrecoverable error"), with the beat it embeds, and nothing is consumed or swept after
    the broker is back.

    Such a channel fails as a disconnected one instead, which kombu and Celery handle: the
    restore is skipped, the ack logged as failed. The message, if the broker kept it, comes back
    after the visibility timeout and its task does nothing (a delivery takes a lease, one that is
    delivered is not due); if the broker lost it, the sweeper queues the delivery again."""
    try:
        import redis
        from kombu.transport import redis as kombu_redis
    except ImportError:  # pragma: no cover - celery[redis] is a dependency
        return
    connparams = kombu_redis.Channel._connparams
    if getattr(connparams, "fails_when_detached", False):
        return

    def _connparams(self, *args, **kwargs):
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("this channel's broker connection is closed")
        return connparams(self, *args, **kwargs)

    _connparams.fails_when_detached = True
    kombu_redis.Channel._connparams = _connparams


_redis_channels_of_a_lost_connection_fail_as_disconnected()

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
