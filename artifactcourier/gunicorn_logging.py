"""gunicorn's own log lines (access and error) through the service's one redaction.

gunicorn writes its access log itself, outside Django's LOGGING: without this, a token a
client puts in a URL path, or a control character in a header, would land in it verbatim.
Configured with ``logger_class`` (gunicorn.conf.py) or ``--logger-class``.
"""

import re
import traceback

from gunicorn.glogging import Logger

from tokens.logging import RedactSecretsFilter

_FORMAT_KEY = re.compile(r"%\(([^)]*)\)")
# The atoms the access line is built from when the format names no others (gunicorn.conf.py's
# does not): gunicorn's atoms() would also build one per request header, response header and
# environ entry, and escape them all, for every request (~100 µs of a ~1 ms request).
_CHEAP_ATOMS = frozenset({"h", "m", "U", "s", "B", "M"})


class RedactingLogger(Logger):
    """gunicorn's logger, with ``RedactSecretsFilter`` on its error and access loggers."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactSecretsFilter) for f in log.filters):
                log.addFilter(RedactSecretsFilter())
        self._cheap_format = set(_FORMAT_KEY.findall(cfg.access_log_format)) <= _CHEAP_ATOMS

    def access(self, resp, req, environ, request_time) -> None:
        if not getattr(self, "_cheap_format", False):
            return super().access(resp, req, environ, request_time)
        if not self.access_log_enabled:
            return None
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        # The values gunicorn's atoms() gives these keys, escaped by the same wrapper.
        atoms = self.atoms_wrapper_class(
            {
                "h": environ.get("REMOTE_ADDR", "-"),
                "m": environ.get("REQUEST_METHOD"),
                "U": environ.get("PATH_INFO"),
                "s": status,
                "B": getattr(resp, "sent", None),
                "M": request_time.seconds * 1000 + int(request_time.microseconds / 1000),
            }
        )
        try:
            # Formatted once, here: a message without arguments is logged as it is (the
            # redaction filter and the formatter would each format it again otherwise).
            self.access_log.info(self.cfg.access_log_format % atoms)
        except Exception:
            self.error(traceback.format_exc())
        return None
