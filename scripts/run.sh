#!/usr/bin/env bash
# Starts web (gunicorn) and a Celery worker with embedded beat; stops both on Ctrl-C.
set -euo pipefail
VENV=${VENV:-.venv}
PORT=${PORT:-8000}
DATA_DIR=${AC_DATA_DIR:-var}
mkdir -p "$DATA_DIR"

"$VENV/bin/celery" -A artifactcourier worker --beat --loglevel=INFO --concurrency=2 \
    --schedule "$DATA_DIR/celerybeat-schedule" &
worker=$!
trap 'kill $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT INT TERM

echo "artifactcourier: http://127.0.0.1:$PORT/  (API docs: /api/docs/, admin: /admin/)"
"$VENV/bin/gunicorn" artifactcourier.wsgi:application \
    --bind "127.0.0.1:$PORT" --workers "${WEB_CONCURRENCY:-2}" --access-logfile - \
    --timeout 300 \
    --access-logformat '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'  # path only: no sig= in logs
