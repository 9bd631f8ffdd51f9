"""gunicorn's own log lines (access and error) through the service's one redaction.

gunicorn writes its access log itself, outside Django's LOGGING: without this, a token a
client puts in a URL path, or a control character in a header, would land in it verbatim.
Configured with ``logger_class`` (gunicorn.conf.py) or ``--logger-class``.
"""

from gunicorn.glogging import Logger

from tokens.logging import RedactSecretsFilter


class RedactingLogger(Logger):
    """gunicorn's logger, with ``RedactSecretsFilter`` on its error and access loggers."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactSecretsFilter) for f in log.filters):
                log.addFilter(RedactSecretsFilter())
