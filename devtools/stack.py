"""The whole service as separate processes on loopback: migrate a fresh SQLite database, then
gunicorn (web) and a Celery worker (with beat) on a Redis broker. For the webhook end-to-end
tests and bench/fanout.py."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from .servers import ROOT, manage, start_gunicorn, stop


def celery_worker(*options: str) -> list[str]:
    """The command line of a Celery worker of this project: alone on its broker (no gossip, no
    mingle), whatever ``options`` add (pool, concurrency, beat, log level)."""
    return [
        sys.executable, "-m", "celery", "-A", "artifactcourier", "worker", *options,
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


class Stack:
    def __init__(
        self, data_dir: Path, broker_url: str, extra_env: dict | None = None, quiet: bool = True
    ) -> None:
        self.data_dir = Path(data_dir)
        self.broker_url = broker_url
        self.quiet = quiet
        self.port = 0  # gunicorn's, once started
        self.env = {
            **os.environ,
            "AC_DATA_DIR": str(self.data_dir),
            "CELERY_BROKER_URL": broker_url,
            "WEBHOOK_ALLOW_HTTP": "1",
            "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
        }
        # A database of its own (SQLite in data_dir, unless extra_env names one), whatever the
        # test suite runs on.
        for name in ("DATABASE_URL", "CELERY_RESULT_BACKEND", "REDIS_URL"):
            self.env.pop(name, None)
        self.env.update(extra_env or {})
        self.web: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)

    def project_key(self, slug: str, *scopes: str) -> str:
        self.manage("create_project", slug)
        options = [f"--scope={s}" for s in scopes]
        return self.manage("mint_project_key", slug, *options).strip().splitlines()[-1]

    def start(self, concurrency: int = 2, pool: str = "prefork") -> "Stack":
        self.manage("migrate", "--noinput", "-v0")
        self.web, self.port = start_gunicorn(self.env, "--threads", "8", quiet=self.quiet)
        # Links in payloads (built by the worker) point at this web process.
        self.env["PUBLIC_BASE_URL"] = self.base_url
        self.start_worker(concurrency=concurrency, pool=pool)
        return self

    @property
    def worker_log(self) -> Path:
        """What the workers this stack started wrote (when quiet), one after the other."""
        return self.data_dir / "worker.log"

    def worker_log_tail(self, lines: int = 80) -> str:
        if not self.worker_log.exists():
            return "(no worker log)"
        return "\n".join(self.worker_log.read_text(errors="replace").splitlines()[-lines:])

    def start_worker(self, concurrency: int = 2, pool: str = "prefork") -> subprocess.Popen:
        with open(self.worker_log, "ab") as log:
            self.worker = subprocess.Popen(
                celery_worker(
                    "--beat",
                    f"--schedule={self.data_dir / 'beat-schedule'}",
                    f"--pool={pool}",
                    f"--concurrency={concurrency}",
                    "--loglevel=WARNING",
                ),
                cwd=ROOT,
                env=self.env,
                stdout=log if self.quiet else None,
                stderr=subprocess.STDOUT if self.quiet else None,
                start_new_session=True,  # its own process group: the pool's children die with it
            )
        return self.worker

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool processes: nothing gets to clean up."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def stop(self) -> None:
        for proc in (self.worker, self.web):
            if proc is not None and proc.poll() is None:
                stop(proc)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
