"""The `courier` executable driven as a subprocess against a live server: gunicorn on its own
SQLite database and artifact directory, started once per module."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.servers import free_port, manage, start_gunicorn, stop

ROOT = Path(__file__).resolve().parents[2]
COURIER = Path(sys.executable).parent / "courier"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    env: dict
    project_token: str

    def manage(self, *args: str) -> str:
        return manage(self.env, *args)


def courier(
    *args: str,
    env: dict | None = None,
    cwd=None,
    timeout: float = 300,
    stdin=None,
    reveals_secrets: bool = False,
) -> Result:
    """Run the installed `courier` console script with exactly ``env`` (plus PATH/HOME), as a
    CI job does: no terminal. Every run is checked for what must never show in a CI log:
    control characters (escape sequences, forged lines) and the token it was given."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL") if k in os.environ}
    env = {**base, "COURIER_RETRIES": "2", **(env or {})}
    proc = subprocess.run(
        [str(COURIER), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    controls = [ch for ch in result.output if ch != "\n" and not ch.isprintable()]
    assert not controls, f"control characters in the output: {controls!r}"
    if not reveals_secrets:
        for name in ("COURIER_TOKEN", "COURIER_DEPLOY_TOKEN"):
            if env.get(name):
                assert env[name] not in result.output, f"{name} shows in the output"
    return result


def server_env(data_dir: Path, **extra) -> dict:
    env = {
        **os.environ,
        "AC_DATA_DIR": str(data_dir),
        "STORAGE_BACKEND": "filesystem",
        # Small pages and payloads, so the trees the tests upload span several listing pages
        # and a delivery lists only part of them: clients must follow `next` and listing_url.
        "SHARE_LISTING_PAGE_SIZE": "5",
        "WEBHOOK_PAYLOAD_MAX_ARTIFACTS": "3",
        **extra,
    }
    env.pop("DATABASE_URL", None)
    return env


@pytest.fixture(scope="module")
def courier_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("server")
    env = server_env(data_dir)
    manage(env, "migrate", "--noinput")
    project_token = manage(env, "create_project", "app").strip().splitlines()[-1]
    # Links the service hands out (shares, webhooks) must point at a port we know before
    # gunicorn starts: bind that one as well as the one start_gunicorn picks.
    public_port = free_port()
    proc, _ = start_gunicorn(
        {**env, "PUBLIC_BASE_URL": f"http://127.0.0.1:{public_port}"},
        "--bind",
        f"127.0.0.1:{public_port}",
        "--timeout",
        "120",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
    )
    try:
        yield LiveServer(f"http://127.0.0.1:{public_port}", data_dir, env, project_token)
    finally:
        stop(proc)


@pytest.fixture
def started(courier_server):
    """A fresh running build: the env lines `courier build start --format env` printed."""
    result = courier(
        "build",
        "start",
        "--project",
        "app",
        "--ref",
        "refs/heads/main",
        "--commit",
        "c0ffee" * 6 + "c0ff",
        "--format",
        "env",
        env={"COURIER_URL": courier_server.url, "COURIER_TOKEN": courier_server.project_token},
        reveals_secrets=True,
    )
    assert result.code == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    return {"COURIER_URL": courier_server.url, **lines}
