"""Sharing and the downstream loop end to end: `courier share` links downloaded without a
key, `courier revoke` withdrawing them, `courier status`, and a real webhook delivery (a
Celery worker sends it) to the reference receiver, which fetches the build's artifacts
through the payload's links and reports back on the build."""

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import requests

from devtools.servers import free_port, stop
from devtools.stack import celery_worker

from .conftest import ROOT, courier
from .test_roundtrip import make_tree, tree

pytestmark = pytest.mark.slow


def upload_tree(started, tmp_path) -> dict[str, bytes]:
    files = make_tree(tmp_path / "src")
    result = courier("upload", str(tmp_path / "src"), "--prefix", "dist/", env=started)
    assert result.code == 0, result.output
    return {f"dist/{rel}": data for rel, data in files.items()}


def test_a_share_listing_link_downloads_every_file_without_a_key(started, tmp_path):
    files = upload_tree(started, tmp_path)
    shared = courier("share", "--prefix", "dist/", "--expires", "30m", "--json", env=started)
    assert shared.code == 0, shared.output
    share = json.loads(shared.stdout)
    assert {a["path"] for a in share["artifacts"]} == set(files)

    out = tmp_path / "out"
    keyless = {"COURIER_URL": started["COURIER_URL"]}
    down = courier("download", share["url"], "-o", str(out), env=keyless)
    assert down.code == 0, down.output
    assert tree(out) == files

    one = next(a for a in share["artifacts"] if a["path"] == "dist/a.bin")
    single = courier("download", one["url"], "-o", str(tmp_path / "one"), env=keyless)
    assert single.code == 0, single.output
    assert tree(tmp_path / "one") == {"a.bin": files["dist/a.bin"]}

    text = courier("share", "--paths", "dist/a.bin", env=started)
    assert text.code == 0 and "listing:" in text.stdout and "/dl/" in text.stdout

    revoked = courier("revoke", str(share["key_id"]), env=started)
    assert revoked.code == 0, revoked.output
    after = courier("download", share["url"], "-o", str(tmp_path / "late"), env=keyless)
    assert after.code == 3, after.output


def test_status_reports_with_a_key_holding_only_build_status(started):
    derived = courier(
        "key", "derive", "--scopes", "build:status", "--expires", "1h", "--json",
        env=started, reveals_secrets=True,
    )  # fmt: skip
    assert derived.code == 0, derived.output
    status_env = {**started, "COURIER_TOKEN": json.loads(derived.stdout)["token"]}
    for state in ("pending", "success"):
        result = courier(
            "status", "--context", "downstream/tests", "--state", state,
            "--description", "all green", "--target-url", "https://ci.example/job/1",
            env=status_env,
        )  # fmt: skip
        assert result.code == 0, result.output
    shown = courier("build", "show", "--json", env=started)
    statuses = json.loads(shown.stdout)["statuses"]
    assert [(s["context"], s["state"]) for s in statuses] == [("downstream/tests", "success")]
    # That key may report, nothing else.
    assert courier("build", "show", env=status_env).code == 3


@contextmanager
def process(args, env, cwd=ROOT, **kwargs):
    proc = subprocess.Popen(args, cwd=cwd, env=env, **kwargs)
    try:
        yield proc
    finally:
        stop(proc)


def test_a_real_delivery_reaches_the_reference_receiver_which_reports_back(
    courier_server, tmp_path
):
    manager = courier_server.manage("mint_project_key", "app", "--scope", "webhooks:manage")
    manager_token = manager.strip().splitlines()[-1]
    receiver_port = free_port()
    response = requests.post(
        f"{courier_server.url}/api/v1/projects/app/webhooks/",
        json={"url": f"http://127.0.0.1:{receiver_port}/", "events": ["build.succeeded"]},
        headers={"Authorization": f"Bearer {manager_token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    receiver_env = {
        **os.environ,
        "WEBHOOK_SECRET": response.json()["signing_secret"],
        "COURIER_URL": courier_server.url,
        # Past the payload's 3 links and the listing's first page (5): the receiver must have
        # followed listing_url through its pages.
        "RECEIVER_COMMAND": "test -s dist/nested/deeper/b.txt",
    }
    worker = celery_worker("--pool=solo", "--loglevel=WARNING")
    with (
        process(
            [sys.executable, "examples/receiver/handler.py", "--port", str(receiver_port)],
            env=receiver_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        process(
            worker,
            # Run from tmp_path: kombu's filesystem broker keeps a control folder in the cwd.
            cwd=tmp_path,
            env={
                **courier_server.env,
                "PUBLIC_BASE_URL": courier_server.url,
                "PYTHONPATH": str(ROOT),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ):
        started = start_build(courier_server)
        upload_tree(started, tmp_path)
        finished = courier("build", "finish", "--state", "succeeded", env=started)
        assert finished.code == 0, finished.output

        deadline = time.monotonic() + 120
        statuses = []
        while time.monotonic() < deadline:
            shown = courier("build", "show", "--json", env=started)
            statuses = json.loads(shown.stdout).get("statuses") or []
            if any(s["state"] in ("success", "failure", "error") for s in statuses):
                break
            time.sleep(0.5)
    assert [(s["context"], s["state"]) for s in statuses] == [("downstream/receiver", "success")]


def start_build(courier_server) -> dict:
    result = courier(
        "build", "start", "--project", "app", "--ref", "refs/heads/main", "--commit", "e" * 40,
        "--format", "env",
        env={"COURIER_URL": courier_server.url, "COURIER_TOKEN": courier_server.project_token},
        reveals_secrets=True,
    )  # fmt: skip
    assert result.code == 0, result.output
    return {"COURIER_URL": courier_server.url, **dict(
        line.split("=", 1) for line in result.stdout.splitlines()
    )}  # fmt: skip
