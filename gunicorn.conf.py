"""gunicorn's configuration: the one file `make run` (scripts/run.sh) and the compose stack use.

Serving model: a few processes, each with a pool of threads (gthread). A connection costs a
thread only while a request is being read or answered; a client that has sent nothing waits on
the worker's poller and costs a file descriptor. A slow client (an upload at modem speed, a
request head sent byte by byte) therefore ties up one thread, never a whole process, and a
request head must arrive whole within GUNICORN_HEAD_TIMEOUT seconds.

``timeout`` is a heartbeat under gthread: the worker's main loop checks in every second
whatever its threads are doing, so a long transfer is never killed for taking long. A stalled
upload body is cut by the application instead (ARTIFACT_UPLOAD_IDLE_TIMEOUT, 408).

Every value can be overridden on the command line or by GUNICORN_CMD_ARGS.
"""

import os

wsgi_app = "artifactcourier.wsgi:application"
# Loopback unless told otherwise (the compose stack binds 0.0.0.0:8000 on its command line).
bind = [os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")]

# gunicorn's gthread, plus a deadline for the request head (GUNICORN_HEAD_TIMEOUT, 20 s).
worker_class = "artifactcourier.serving.ThreadWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads per process: how many requests (and slow clients mid-request) one process serves at
# once. 2 x 32 lets dozens of slow uploaders coexist with everyone else on a laptop.
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# Open connections per process, idle ones included (each costs a file descriptor).
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
# Heartbeat: a process whose main loop is stuck this long is restarted (not a request limit).
timeout = 30
# On SIGTERM, requests in flight get this long to finish; well under the 15 s a supervisor
# (systemd, docker, a CI runner) usually waits before SIGKILL.
graceful_timeout = 10
keepalive = 5

accesslog = "-"
# Path only (%(U)s, no query string): signed links carry their signature in the query string.
# Only these atoms are built per request (RedactingLogger); a format naming others (a header,
# %(r)s) gets gunicorn's full set.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
# Every access and error line is escaped (no forged lines, no terminal escapes) and redacted
# (tokens, bearer credentials, sig= values) by the one redaction the Django logs use too.
logger_class = "artifactcourier.gunicorn_logging.RedactingLogger"
# gunicorn's control socket (a Unix socket under ~/.gunicorn, one path shared by every instance
# of the user) is not used: processes are managed by signals, and nothing is written outside
# the data directory.
control_socket_disable = True
