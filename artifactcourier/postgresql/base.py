"""Django's PostgreSQL backend, with the statements it sends past its cursors (the health check
that starts each request, COMMIT, ROLLBACK) under the web processes' query deadline
(artifactcourier/query_deadline.py); elsewhere it is Django's backend unchanged."""

from django.db.backends.postgresql import base

from artifactcourier.query_deadline import watching


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self):
        with watching(self):
            return super().is_usable()

    def _commit(self):
        with watching(self):
            return super()._commit()

    def _rollback(self):
        with watching(self):
            return super()._rollback()
