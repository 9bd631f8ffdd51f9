from celery import shared_task
from django.conf import settings

from . import services


@shared_task(
    name="webhooks.delivery_send",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=settings.WEBHOOK_TASK_TIME_LIMIT - 5,
    time_limit=settings.WEBHOOK_TASK_TIME_LIMIT,
)
def delivery_send_task(delivery_id: int) -> None:
    """One attempt of one delivery. Safe to run twice: the attempt takes a lease first."""
    services.delivery_attempt(delivery_id=delivery_id)


@shared_task(name="webhooks.deliveries_sweep", ignore_result=True, acks_late=True)
def deliveries_sweep_task() -> int:
    """Queue due deliveries whose messages were lost (broker outage, killed worker)."""
    return services.deliveries_sweep()


@shared_task(name="webhooks.deliveries_dispatch", ignore_result=True, acks_late=True)
def deliveries_dispatch_task(delivery_ids: list[int]) -> int:
    """Queue one send task per delivery of a build with many subscribers."""
    return services.deliveries_enqueue(ids=delivery_ids)
