"""The serving floor for uploads: a WSGI app that reads the request body and answers 201 with a
small JSON body, nothing else (no Django, no hashing, no database, no disk). Run under the
same gunicorn configuration as the service, it is what any upload costs before the service does
anything (bench/small.py)."""

BODY = b'{"stored": false}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    stream, left = environ["wsgi.input"], int(environ.get("CONTENT_LENGTH") or 0)
    while left > 0:
        chunk = stream.read(min(left, 1 << 16))
        if not chunk:
            break
        left -= len(chunk)
    start_response("201 Created", HEADERS)
    return [BODY]
