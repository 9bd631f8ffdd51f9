"""`make bench` works on a fresh machine and leaves nothing behind."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench_env(tmp_path: Path) -> dict:
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "AC_BENCH_DIR": str(tmp_path / "new")}
    for name in ("DATABASE_URL", "AC_DATA_DIR", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    return env


def test_benchmark_setup_removes_its_data_directory(tmp_path):
    env = bench_env(tmp_path)
    code = "from bench.common import setup_django; setup_django(); print('set up')"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True
    )
    assert b"set up" in out.stdout
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists(), reason="")
def test_transfer_benchmark_runs_without_var_and_cleans_up(tmp_path):
    env = bench_env(tmp_path)
    args = ["--rounds", "1", "--size-mib", "2", "--big-gib", "0"]
    args += ["--dedup-builds", "2", "--dedup-mib", "1"]
    out = subprocess.run(
        [sys.executable, "bench/transfer.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "vs nginx" in out.stdout
    assert list((tmp_path / "new").iterdir()) == []  # created, then emptied
    assert list((tmp_path / "tmp").iterdir()) == []
