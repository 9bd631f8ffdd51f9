import logging
import re

from .crypto import TOKEN_PATTERN

_SIGNATURE = re.compile(r"((?:sig|signature)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    text = TOKEN_PATTERN.sub("ac?_[redacted]", text)
    text = _SIGNATURE.sub(r"\1[redacted]", text)
    return _BEARER.sub(r"\1[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    """Redact API tokens (``ac?_...``), bearer credentials and ``sig=`` values from log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Format the traceback now, redacted; formatters reuse exc_text as it is.
            record.exc_text = redact(_formatter.formatException(record.exc_info))
        return True


_formatter = logging.Formatter()
