"""Embedded mode keeps its data (database, secrets, blobs) private to the user running it, and
`make run`'s admin password never lands in output that may be a log file."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]


def embedded_env(data_dir: Path) -> dict:
    env = {**os.environ, "AC_DATA_DIR": str(data_dir)}
    for name in ("DATABASE_URL", "SECRET_KEY", "TOKEN_PEPPER", "ADMIN_PASSWORD"):
        env.pop(name, None)
    return env


def manage(env: dict, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_and_everything_in_it_are_private(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)  # as an older version left it
    data_dir.chmod(0o755)
    env = embedded_env(data_dir)
    manage(env, "migrate", "--noinput")
    manage(env, "collectstatic", "--noinput", "-v0")
    assert mode(data_dir) == 0o700
    entries = list(data_dir.rglob("*"))
    assert data_dir / "db.sqlite3" in entries and data_dir / "secrets.json" in entries
    for path in entries:
        expected = 0o700 if path.is_dir() else 0o600
        assert mode(path) == expected, f"{path} is {oct(mode(path))}"


@pytest.mark.django_db
@pytest.mark.skipif(not settings.EMBEDDED, reason="embedded mode only")
def test_stored_blobs_are_private(api, build, tmp_path):
    response = api.as_key(build.token).put(
        f"/api/v1/builds/{build.build.pk}/artifacts/dist/app.bin",
        data=b"private bytes",
        content_type="application/octet-stream",
    )
    assert response.status_code == 201
    stored = [p for p in (tmp_path / "artifacts").rglob("*")]
    assert any(p.is_file() for p in stored)
    for path in stored:
        expected = 0o700 if path.is_dir() else 0o600
        assert mode(path) == expected, f"{path} is {oct(mode(path))}"


def test_the_generated_admin_password_is_not_written_to_output_that_is_not_a_terminal(tmp_path):
    data_dir = tmp_path / "var"
    env = embedded_env(data_dir)
    manage(env, "migrate", "--noinput")
    out = manage(env, "ensure_admin", "--url", "http://127.0.0.1:8000/admin/")
    password_file = data_dir / "admin-password"
    password = password_file.read_text().strip()
    assert len(password) >= 12
    assert password not in out
    assert str(password_file) in out
    assert mode(password_file) == 0o600
    check = (
        "from django.contrib.auth import authenticate; "
        f"print(authenticate(username='admin', password={password!r}) is not None)"
    )
    assert manage(env, "shell", "-c", check).splitlines()[-1] == "True"
