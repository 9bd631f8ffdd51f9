#!/usr/bin/env bash
# Starts web (gunicorn) and a Celery worker with embedded beat; stops both on Ctrl-C, SIGTERM or
# SIGHUP, whether the signal reaches this script alone or its whole process group.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PORT=${PORT:-8000}
export AC_DATA_DIR=${AC_DATA_DIR:-$ROOT/var}
# The embedded data (database with sessions and key digests, secrets, blobs) is this user's
# alone: every file the service creates is 0600, every directory 0700.
umask 077
mkdir -p "$AC_DATA_DIR"
chmod 700 "$AC_DATA_DIR"

web="" worker="" stopped=""
stop() {
    [ -n "$stopped" ] && return
    stopped=1
    # shellcheck disable=SC2086  # an unset pid expands to nothing
    kill -TERM $web $worker 2>/dev/null || true
    [ -z "$web" ] || wait "$web" 2>/dev/null || true
    [ -z "$worker" ] || wait "$worker" 2>/dev/null || true
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM HUP
trap stop EXIT

# Each child runs in a process group of its own (job control), so a signal sent to this
# script's group (Ctrl-C; `kill -- -PGID` from systemd, docker or a CI runner) reaches only this
# script, which hands each child exactly one TERM. A prefork Celery worker whose pool processes
# get the group's TERM while their parent is shutting them down can hang in billiard's pool
# cleanup; a second TERM would turn its warm shutdown into a cold one.
set -m
"$VENV/bin/celery" -A artifactcourier worker --beat --loglevel=INFO --concurrency=2 \
    --schedule "$AC_DATA_DIR/celerybeat-schedule" &
worker=$!
"$VENV/bin/gunicorn" --config "$ROOT/gunicorn.conf.py" --bind "127.0.0.1:$PORT" &
web=$!
set +m

echo "artifactcourier: http://127.0.0.1:$PORT/  (API docs: /api/docs/, admin: /admin/)"
# Either process ending ends the service (a web without its worker, or the reverse, is half
# up), with that process's exit status.
status=0
wait -n "$web" "$worker" || status=$?
stop
exit "$status"
