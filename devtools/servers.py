"""Real server processes on loopback, shared by the end-to-end tests and the benchmarks."""

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def manage(env: dict, *args: str, timeout: float = 300) -> str:
    """Run a management command of this checkout in a subprocess with ``env``; its output."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_gunicorn(
    env: dict,
    *options: str,
    quiet: bool = True,
    preexec_fn=None,
    app: str = "artifactcourier.wsgi:application",
) -> tuple[subprocess.Popen, int]:
    """The app under gunicorn with the repository's configuration (gunicorn.conf.py), in one
    process unless ``options`` say otherwise, on a free loopback port, once it accepts
    connections."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(ROOT / "gunicorn.conf.py"),
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            *options,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.DEVNULL if quiet else None,
        preexec_fn=preexec_fn,
    )
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, port
