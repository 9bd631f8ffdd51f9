"""The app under gunicorn on its own SQLite database, optionally behind nginx (X-Accel mode)
or on an S3 server, with one project, one build and a few artifacts: for the sharing
end-to-end tests and ``bench/share.py``."""

import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

from .nginx import Nginx
from .servers import ROOT, free_port, stop, wait_for_port


class ShareStack:
    """``mode`` is SHARE_SERVE_MODE; ``s3`` a dict of AWS_* settings for the S3 mode."""

    def __init__(
        self,
        data_dir: Path,
        *,
        mode: str = "direct",
        s3: dict | None = None,
        gunicorn_options: tuple[str, ...] = ("--workers", "1"),
        extra_env: dict | None = None,
        nginx_baseline: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.artifact_root = data_dir / "artifacts"
        self.app_port = free_port()
        self.nginx: Nginx | None = None
        env = {
            **os.environ,
            "AC_DATA_DIR": str(data_dir),
            "ARTIFACT_ROOT": str(self.artifact_root),
            "SHARE_SERVE_MODE": mode,
            "STORAGE_BACKEND": "s3" if s3 else "filesystem",
            **(s3 or {}),
            **(extra_env or {}),
        }
        env.pop("DATABASE_URL", None)
        self.env = env
        if mode == "x-accel":
            self.artifact_root.mkdir(parents=True, exist_ok=True)
            self.nginx = Nginx(
                data_dir / "nginx", self.app_port, self.artifact_root, baseline=nginx_baseline
            )
            env["PUBLIC_BASE_URL"] = self.nginx.url
        else:
            env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{self.app_port}"
        self.url = env["PUBLIC_BASE_URL"]
        self.manage("migrate", "--noinput")
        self.project_token = self.manage("create_project", "share").strip().splitlines()[-1]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "artifactcourier.wsgi:application",
                "--bind",
                f"127.0.0.1:{self.app_port}",
                "--timeout",
                "120",
                *gunicorn_options,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(data_dir / "gunicorn.log", "ab"),  # noqa: SIM115
        )
        try:
            wait_for_port(self.app_port, self.proc)
        except BaseException:
            self.stop()
            raise
        build = self.api(
            "POST",
            "/api/v1/projects/share/builds/",
            self.project_token,
            {"ref": "refs/heads/main", "commit": "c0ffee" * 6, "trusted": True},
        )
        self.build_id, self.token = build["id"], build["key"]["token"]

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def request(self, method: str, path: str, token: str | None = None, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.app_port, timeout=120)
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        if isinstance(body, dict):
            body = json.dumps(body)
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response, data

    def api(self, method: str, path: str, token: str, body=None):
        response, data = self.request(method, path, token, body)
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return json.loads(data) if data else None

    def upload(self, path: str, data: bytes | Path, content_type="application/octet-stream"):
        body = data.read_bytes() if isinstance(data, Path) else data
        response, answer = self.request(
            "PUT",
            f"/api/v1/builds/{self.build_id}/artifacts/{path}",
            self.token,
            body,
            {"Content-Type": content_type},
        )
        if response.status not in (200, 201):
            raise RuntimeError(f"upload {path}: {response.status} {answer[:300]!r}")
        return json.loads(answer)

    def finish(self) -> None:
        self.api(
            "POST", f"/api/v1/builds/{self.build_id}/finish", self.token, {"state": "succeeded"}
        )

    def share(self, **body) -> dict:
        return self.api(
            "POST",
            f"/api/v1/builds/{self.build_id}/share",
            self.token,
            {"expires_in": 3600, **body},
        )

    def stop(self) -> None:
        if getattr(self, "proc", None) is not None:
            stop(self.proc)
        if self.nginx is not None:
            self.nginx.stop()
