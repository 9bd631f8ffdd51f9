"""Real server processes for end-to-end tests: a Celery worker on Redis, gunicorn, ..."""

import os
import socket
import subprocess
from pathlib import Path

import pytest

from devtools.servers import stop
from devtools.stack import celery_worker

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_available(url: str = REDIS_URL) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def require_redis():
    if redis_available():
        return
    if os.environ.get("CI"):
        pytest.fail(f"Redis is not reachable at {REDIS_URL}; CI must start it.")
    pytest.skip(f"Redis is not reachable at {REDIS_URL}")


@pytest.fixture
def celery_worker_process(tmp_path):
    """A real `celery worker` subprocess consuming from Redis; yields the broker URL."""
    require_redis()
    env = {
        **os.environ,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL,
        "AC_DATA_DIR": str(tmp_path),
    }
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        celery_worker("--pool=solo", "--loglevel=INFO"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield REDIS_URL
    finally:
        stop(proc)
