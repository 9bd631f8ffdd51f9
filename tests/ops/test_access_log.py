"""gunicorn's access line under gunicorn.conf.py's format, as RedactingLogger writes it: the
same line gunicorn's own formatting gives (built from only the atoms the format names),
redacted and escaped."""

import runpy
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from artifactcourier.gunicorn_logging import RedactingLogger

ROOT = Path(__file__).resolve().parents[2]


def logger(tmp_path, access_format: str) -> tuple[RedactingLogger, Path]:
    path = tmp_path / "access.log"
    cfg = Config()
    cfg.set("accesslog", str(path))
    cfg.set("access_log_format", access_format)
    return RedactingLogger(cfg), path


def exchange(path_info: str):
    req = SimpleNamespace(headers=[("HOST", "h"), ("USER-AGENT", 'curl "7"')], method="GET")
    resp = SimpleNamespace(status="403 Forbidden", sent=57, headers=[("Content-Type", "x/y")])
    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path_info,
        "QUERY_STRING": "exp=1&kid=2&sig=U0VDUkVUU0lH",
        "RAW_URI": f"{path_info}?exp=1&kid=2&sig=U0VDUkVUU0lH",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    return resp, req, environ, timedelta(seconds=1, microseconds=234_567)


PATHS = ["/dl/builds/1/a.txt", '/dl/builds/1/"quoted" 100%.txt', "/x\n127.0.0.1 forged\x1b[31m"]


@pytest.mark.parametrize("path_info", PATHS)
def test_the_configured_access_line_is_gunicorns_own(tmp_path, path_info):
    access_format = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["access_log_format"]
    log, path = logger(tmp_path, access_format)
    log.access(*exchange(path_info))
    Logger.access(log, *exchange(path_info))  # gunicorn's own atoms, through the same filter
    ours, theirs = path.read_text().splitlines()
    assert ours == theirs
    assert ours.startswith('127.0.0.1 "GET /') and ours.endswith(" 403 57 1234ms")
    assert "\n" not in ours and "\x1b" not in ours and "U0VDUkVUU0lH" not in ours


def test_a_format_naming_other_atoms_gets_gunicorns_atoms(tmp_path):
    log, path = logger(tmp_path, '%(h)s "%(r)s" %(s)s "%({user-agent}i)s" %({content-type}o)s')
    log.access(*exchange("/dl/builds/1/a.txt"))
    line = path.read_text().strip()
    assert line == (
        '127.0.0.1 "GET /dl/builds/1/a.txt?exp=1&kid=2&sig=[redacted] HTTP/1.1" 403 '
        '"curl \\"7\\"" x/y'
    )
