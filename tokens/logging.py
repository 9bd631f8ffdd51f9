"""One redaction for every log line the service writes: Django's handlers (LOGGING), Celery's
and gunicorn's (artifactcourier.gunicorn_logging) all apply ``log_clean``."""

import logging
import re

from .crypto import TOKEN_PATTERN

_SIGNATURE = re.compile(r"((?:sig|signature)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)
# Characters that would let logged input forge or hide lines: C0 and C1 controls (newline,
# ESC for terminal escapes, NUL), line/paragraph separators, bidirectional overrides and
# zero-width characters, and lone surrogates (which no log stream can encode).
_INVISIBLE = "\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_INVISIBLE}]")
# In a traceback, newlines and tabs are its layout; everything else above is still escaped.
_UNSAFE_IN_TRACEBACK = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_INVISIBLE}]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def redact(text: str) -> str:
    """Tokens, ``sig=``/``signature=`` values and bearer credentials, wherever they stand."""
    text = TOKEN_PATTERN.sub("ac?_[redacted]", text)
    text = _SIGNATURE.sub(r"\1[redacted]", text)
    return _BEARER.sub(r"\1[redacted]", text)


def log_clean(text: str) -> str:
    """``text`` fit for one log line: secrets redacted, unsafe characters escaped (``\\x0a``)."""
    return _UNSAFE.sub(_escape, redact(text))


class RedactSecretsFilter(logging.Filter):
    """Redact API tokens (``ac?_...``), bearer credentials and ``sig=`` values from log records,
    and escape control characters, so a logged request path cannot forge a line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = log_clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Format the traceback now, redacted; formatters reuse exc_text as it is.
            record.exc_text = _formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _UNSAFE_IN_TRACEBACK.sub(_escape, redact(record.exc_text))
        return True


_formatter = logging.Formatter()
