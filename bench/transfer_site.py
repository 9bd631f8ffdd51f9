"""Settings for bench/transfer.py's gunicorn: the benchmark settings plus a naive upload view."""

from bench.settings import *  # noqa: F403

ROOT_URLCONF = "bench.transfer_urls"
