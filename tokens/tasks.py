from celery import shared_task

from . import services


@shared_task(name="tokens.key_expiry_warn")
def key_expiry_warn() -> int:
    """Periodic (CELERY_BEAT_SCHEDULE): audit long-lived keys nearing expiry. Safe to run any
    number of times: each key is warned once per threshold."""
    return sum(1 for warning in services.key_expiry_warn() if warning.new)
