import pytest
from celery import Celery

pytestmark = pytest.mark.slow


def test_a_task_round_trips_through_a_real_worker_on_redis(celery_worker_process):
    client = Celery(broker=celery_worker_process, backend=celery_worker_process)
    result = client.send_task("artifactcourier.ping")
    assert result.get(timeout=60) == "pong"
