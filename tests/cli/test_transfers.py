"""`courier upload` and `courier download` against the live server: re-runs, resumption,
corruption on the server side, exit codes."""

import os

import pytest

from devtools.servers import free_port

from .conftest import courier
from .stub import cutting_proxy

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


def upload_one(started, tmp_path, name="big.bin", size=4 * MiB) -> bytes:
    data = os.urandom(size)
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / name).write_bytes(data)
    result = courier("upload", str(tmp_path / "src" / name), env=started)
    assert result.code == 0, result.output
    return data


def test_a_rerun_sends_only_what_changed_and_a_conflict_fails(started, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}.txt").write_text(f"file {i}\n")
    assert courier("upload", str(src), env=started).code == 0
    (src / "new.txt").write_text("new\n")
    again = courier("upload", str(src), env=started)
    assert again.code == 0, again.output
    assert again.stderr.count("unchanged ") == 3
    assert "uploaded new.txt" in again.stderr

    (src / "f0.txt").write_text("other bytes at a path the build already holds\n")
    conflict = courier("upload", str(src), "--json", env=started)
    assert conflict.code == 1
    assert '"path": "f0.txt"' in conflict.stdout and '"failed": 1' in conflict.stdout


def test_an_interrupted_download_resumes_from_its_partial_file(started, tmp_path):
    data = upload_one(started, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".big.bin.courier-part").write_bytes(data[: 3 * MiB])
    result = courier("download", "--build", started["COURIER_BUILD"], "-o", str(out), env=started)
    assert result.code == 0, result.output
    assert f"resumed at {3 * MiB} bytes" in result.stderr
    assert (out / "big.bin").read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["big.bin"]


def test_a_resumed_download_is_verified_whole(started, tmp_path):
    """A partial file that does not hold the file's first bytes: resuming (Range) yields a
    file with the wrong digest, which is refused and not left in place."""
    data = upload_one(started, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".big.bin.courier-part").write_bytes(os.urandom(MiB))
    result = courier("download", "--build", started["COURIER_BUILD"], "-o", str(out), env=started)
    assert result.code == 1
    assert "SHA-256 mismatch" in result.output
    assert list(out.iterdir()) == []
    # The next run starts afresh.
    again = courier("download", "--build", started["COURIER_BUILD"], "-o", str(out), env=started)
    assert again.code == 0, again.output
    assert (out / "big.bin").read_bytes() == data


# Small, and above courier's HEAVY (32 MiB): written and hashed on a thread of their own.
SIZES = pytest.mark.parametrize("size", [6 * MiB, 40 * MiB], ids=["small", "heavy"])


@SIZES
def test_a_download_cut_in_the_middle_resumes_in_the_same_run(
    started, courier_server, tmp_path, size
):
    data = upload_one(started, tmp_path, size=size)
    port = int(courier_server.url.rsplit(":", 1)[1])
    with cutting_proxy(port, cut_after=2 * MiB) as (proxy_port, state):
        env = {**started, "COURIER_URL": f"http://127.0.0.1:{proxy_port}"}
        result = courier(
            "download", "--build", started["COURIER_BUILD"], "-o", str(tmp_path / "out"), env=env
        )
    assert state["cuts"] == 1
    assert result.code == 0, result.output
    assert "resumed at" in result.stderr
    assert (tmp_path / "out" / "big.bin").read_bytes() == data


@SIZES
def test_a_byte_corrupted_on_the_server_is_detected(started, courier_server, tmp_path, size):
    data = upload_one(started, tmp_path, name="victim.bin", size=size)
    blobs = [
        p
        for p in (courier_server.data_dir / "artifacts").rglob("*")
        if p.is_file() and p.stat().st_size == len(data) and p.read_bytes() == data
    ]
    assert len(blobs) == 1
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0x01
    blobs[0].write_bytes(bytes(corrupted))

    out = tmp_path / "out"
    result = courier("download", "--build", started["COURIER_BUILD"], "-o", str(out), env=started)
    assert result.code == 1
    assert "SHA-256 mismatch" in result.output and "victim.bin" in result.output
    assert not any(p.is_file() for p in out.rglob("*"))


def test_a_bad_token_exits_3(started, tmp_path):
    (tmp_path / "f").write_text("x")
    env = {**started, "COURIER_TOKEN": "acb_" + "x" * 40}
    for args in (["whoami"], ["upload", str(tmp_path / "f")], ["download", "--build", "1"]):
        result = courier(*args, env=env)
        assert result.code == 3, (args, result.output)
        assert "401" in result.stderr


def test_no_token_at_all_exits_3_and_says_how_to_set_one(started):
    env = {k: v for k, v in started.items() if k != "COURIER_TOKEN"}
    result = courier("whoami", env=env)
    assert result.code == 3
    assert "COURIER_TOKEN" in result.stderr


def test_an_unknown_build_exits_4(started, tmp_path):
    result = courier("download", "--build", "987654", "-o", str(tmp_path), env=started)
    assert result.code == 4, result.output
    show = courier("build", "show", "--build", "987654", env=started)
    assert show.code == 4


def test_a_refused_connection_exits_1(tmp_path):
    env = {"COURIER_URL": f"http://127.0.0.1:{free_port()}", "COURIER_TOKEN": "acb_x" * 8}
    result = courier("whoami", "--retries", "1", env=env)
    assert result.code == 1
    assert "connection refused" in result.stderr


def test_usage_errors_exit_2(started, tmp_path):
    assert courier("upload", str(tmp_path / "missing"), env=started).code == 2
    no_build = {k: v for k, v in started.items() if k != "COURIER_BUILD"}
    assert courier("upload", str(tmp_path), env=no_build).code == 2
    assert courier("build", "finish", "--state", "maybe", env=started).code == 2
    assert courier("frobnicate", env=started).code == 2


def test_whoami_finish_and_a_derived_key(started, tmp_path):
    who = courier("whoami", "--json", env=started)
    assert who.code == 0, who.output
    assert '"artifacts:write"' in who.stdout

    derived = courier(
        "key", "derive", "--scopes", "artifacts:read", "--expires", "1h", "--prefix", "dist/",
        "--format", "env", "--env-name", "READ_TOKEN", env=started, reveals_secrets=True,
    )  # fmt: skip
    assert derived.code == 0, derived.output
    name, token = derived.stdout.strip().split("=", 1)
    assert name == "READ_TOKEN"
    as_derived = courier("whoami", "--json", env={**started, "COURIER_TOKEN": token})
    assert '"artifacts:read"' in as_derived.stdout and "artifacts:write" not in as_derived.stdout

    finished = courier("build", "finish", "--state", "succeeded", env=started)
    assert finished.code == 0, finished.output
    assert "succeeded" in finished.stdout
    # A re-run step finishing it the same way is done; another way is a failure.
    again = courier("build", "finish", "--state", "succeeded", env=started)
    assert again.code == 0 and "already finished as succeeded" in again.stdout, again.output
    other = courier("build", "finish", "--state", "failed", env=started)
    assert other.code == 1 and "already finished as succeeded" in other.stderr, other.output
    (tmp_path / "late.txt").write_text("too late")
    late = courier("upload", str(tmp_path / "late.txt"), env=started)
    assert late.code in (1, 3)
    assert "FAILED" in late.output


def test_build_start_masks_its_secrets_on_github_actions(courier_server):
    env = {
        "COURIER_URL": courier_server.url,
        "COURIER_TOKEN": courier_server.project_token,
        "GITHUB_ACTIONS": "true",
    }
    result = courier(
        "build", "start", "--project", "app", "--ref", "refs/heads/main", "--commit", "ab" * 20,
        "--format", "env", env=env, reveals_secrets=True,
    )  # fmt: skip
    assert result.code == 0, result.output
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert set(lines) == {"COURIER_BUILD", "COURIER_TOKEN"}
    assert f"::add-mask::{lines['COURIER_TOKEN']}" in result.stderr.splitlines()
    assert courier_server.project_token not in result.output

    text = courier(
        "build", "start", "--project", "app", "--ref", "refs/heads/x", "--commit", "cd" * 20,
        env=env,
    )  # fmt: skip
    assert text.code == 0
    assert "acb_" not in text.stdout and "shown once" in text.stderr


def test_progress_bars_on_a_terminal(started, tmp_path):
    """On a pseudo-terminal: rich draws bars (and moves the cursor), then the summary."""
    import pty
    import subprocess

    from .conftest import COURIER

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bar.bin").write_bytes(os.urandom(8 * MiB))
    primary, secondary = pty.openpty()
    base = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    proc = subprocess.Popen(
        [str(COURIER), "upload", str(tmp_path / "src")],
        env={**base, **started, "TERM": "xterm-256color", "COLUMNS": "120"},
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0
    os.close(primary)
    text = seen.decode(errors="replace")
    assert "\x1b[" in text  # the bars are drawn and redrawn in place
    assert "━" in text
    assert "uploaded bar.bin" in text and "uploaded: 1 uploaded" in text
    assert started["COURIER_TOKEN"] not in text


def test_a_file_name_with_control_characters_is_shown_escaped(started, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "evil\x1b[2J\rname.txt").write_text("x")
    result = courier("upload", str(src), env=started)  # the helper checks for raw controls
    assert result.code == 1
    assert "evil\\x1b[2J\\rname.txt" in result.output
