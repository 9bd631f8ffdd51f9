"""What a client sends never forges, hides or leaks through a log line: one redaction and
escaping (tokens.logging.log_clean) on every handler, Django's, Celery's and gunicorn's."""

import http.client
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.servers import start_gunicorn, stop
from tokens import crypto

ROOT = Path(__file__).resolve().parents[2]
TOKEN = crypto.token_generate("build")
FORGED = '127.0.0.1 - - "GET /admin/forged HTTP/1.1" 200'

HOSTILE_MESSAGES = {
    "forged line": f"Not Found: /x\n{FORGED}",
    "carriage return": f"Not Found: /x\r{FORGED}",
    "line separator": f"Not Found: /x\u2028{FORGED}",
    "terminal escape": "Not Found: /x\x1b[31mred\x1b[0m",
    "nul": "Not Found: /x\x00y",
    "bidi override": "Not Found: /x\u202egpj.exe",
    "lone surrogate": "Not Found: /x\ud800",
    "token after a word character": f"Not Found: /x{TOKEN}",
    "token after a digit": f"Not Found: /1{TOKEN}/",
    "token in a query": f"GET /a?token={TOKEN}",
    "signature": "GET /dl/1/a.txt?exp=1&kid=2&sig=U0VDUkVUU0lH",
    "signature first": "GET /dl/1/a.txt?sig=U0VDUkVUU0lH&exp=1",
}


def configured_console() -> logging.Handler:
    # The console handler LOGGING configures (pytest adds capture handlers of its own types).
    return next(h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler)


@pytest.mark.parametrize("message", list(HOSTILE_MESSAGES.values()), ids=list(HOSTILE_MESSAGES))
def test_a_hostile_message_is_one_escaped_line_without_secrets(message):
    handler = configured_console()
    stream = io.StringIO()
    old_stream = handler.setStream(stream)
    try:
        logging.getLogger("django.request").warning("%s", message)
    finally:
        handler.setStream(old_stream)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n"), repr(text)
    body = text[:-1]
    assert all(ch.isprintable() for ch in body), repr(body)
    assert TOKEN not in text and TOKEN[4:] not in text
    assert "U0VDUkVUU0lH" not in text


def test_a_traceback_keeps_its_lines_but_escapes_the_rest():
    handler = configured_console()
    stream = io.StringIO()
    old_stream = handler.setStream(stream)
    try:
        try:
            raise ValueError(f"bad /x{TOKEN}\x1b[31m")
        except ValueError:
            logging.getLogger("artifactcourier").exception("while serving /x\n%s", FORGED)
    finally:
        handler.setStream(old_stream)
    text = stream.getvalue()
    assert "Traceback (most recent call last):" in text
    assert "\x1b" not in text and TOKEN not in text
    assert not any(line.startswith(FORGED) for line in text.splitlines())


def test_every_configured_handler_redacts(tmp_path):
    """In a process of its own (no pytest handlers): every handler on every logger Django's
    setup leaves configured carries the filter."""
    script = (
        "import django, logging; django.setup()\n"
        "from tokens.logging import RedactSecretsFilter\n"
        "loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values()"
        " if isinstance(l, logging.Logger)]\n"
        "writing = [(l.name, h) for l in loggers for h in l.handlers"
        " if not isinstance(h, logging.NullHandler)]\n"
        "bare = [(n, h) for n, h in writing"
        " if not any(isinstance(f, RedactSecretsFilter) for f in h.filters)]\n"
        "handlers = len(writing)\n"
        "print(handlers, bare)\n"
    )
    env = {
        **os.environ,
        "AC_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "artifactcourier.settings",
    }
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    handlers, bare = result.stdout.split(" ", 1)
    assert int(handlers) >= 2  # the console and mail_admins at least
    assert bare.strip() == "[]"


@pytest.mark.slow
def test_gunicorn_access_and_error_logs_are_escaped_and_redacted(tmp_path):
    access_log, stderr_log = tmp_path / "access.log", tmp_path / "stderr.log"
    env = {**os.environ, "AC_DATA_DIR": str(tmp_path / "data")}
    env.pop("DATABASE_URL", None)

    def stderr_to_file():
        fd = os.open(stderr_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)

    requests = [
        ("/x%0a127.0.0.1%20-%20-%20%22GET%20/admin/forged%20HTTP/1.1%22%20200", {}),
        ("/x%0d%0a127.0.0.1%20-%20-%20%22GET%20/admin/forged%20HTTP/1.1%22%20200", {}),
        ("/x%1b[31mred%1b[0m", {}),
        ("/x%00nul", {}),
        (f"/x{TOKEN}", {}),
        (f"/api/v1/x{TOKEN}/y", {"Referer": f"http://h/x{TOKEN}"}),
        ("/dl/1/a.txt?exp=1&kid=2&sig=U0VDUkVUU0lH", {}),
    ]
    proc, port = start_gunicorn(
        env,
        "--logger-class",
        "artifactcourier.gunicorn_logging.RedactingLogger",
        "--access-logfile",
        str(access_log),
        preexec_fn=stderr_to_file,
    )
    answered = 0
    try:
        for target, headers in requests:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", target, headers=headers)
            conn.getresponse().read()
            conn.close()
            answered += 1
    finally:
        stop(proc)
    access = access_log.read_text(errors="surrogateescape")
    errors = stderr_log.read_text(errors="surrogateescape")
    assert "Not Found: /x" in errors  # Django's log is in the captured stream
    for text in (access, errors):
        assert TOKEN not in text and TOKEN[4:] not in text
        assert "U0VDUkVUU0lH" not in text
        assert "\x1b" not in text and "\x00" not in text and "\r" not in text
        assert not any(
            line.startswith('127.0.0.1 - - "GET /admin/forged') for line in text.splitlines()
        )
    # One line per request, each with its own request line.
    lines = access.splitlines()
    assert len(lines) == answered, access
    assert all(line.startswith("127.0.0.1 ") for line in lines), access
