"""The CLI installs and runs without the server: its own distribution, requests and rich only,
and no import of Django or of the server's apps."""

import subprocess
import sys
import tomllib

from .conftest import ROOT

SERVER_MODULES = ["django", "rest_framework", "celery", "artifactcourier", "tokens", "builds",
                  "artifacts", "webhooks"]  # fmt: skip


def test_the_cli_distribution_depends_on_requests_and_rich_only():
    project = tomllib.loads((ROOT / "courier" / "pyproject.toml").read_text())["project"]
    assert project["name"] == "artifactcourier-cli"
    names = {
        dep.split(">")[0].split("=")[0].split("[")[0].strip() for dep in project["dependencies"]
    }
    assert names == {"requests", "rich"}
    assert project["scripts"] == {"courier": "courier.cli:main"}


def test_every_cli_module_imports_and_runs_with_the_server_modules_blocked():
    script = (
        "import sys\n"
        f"for name in {SERVER_MODULES!r}: sys.modules[name] = None\n"
        "import courier.cli, courier.upload, courier.download, courier.output, courier.client\n"
        "import courier.pace\n"
        "raise SystemExit(courier.cli.main(['whoami', '--url', 'http://127.0.0.1:9', "
        "'--retries', '0']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "COURIER_TOKEN": "acb_" + "x" * 40},
        cwd="/",
    )
    assert result.returncode == 1, result.stderr  # ran: the connection was refused
    assert "connection refused" in result.stderr
