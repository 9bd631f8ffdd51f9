"""nginx in front of the app on loopback, for the X-Accel-Redirect serving mode (tests, bench).

``nginx_conf`` is also the reference configuration the documentation points at: the app's
``X-Accel-Redirect`` names a path under an ``internal`` location aliased to the artifact root.
Headers the app set survive the internal redirect only where nginx is told to copy them
(``$upstream_http_*``); nginx's own ETag and Last-Modified are switched off so that every mode
answers with the same validators (ETag = the sha256).
"""

import getpass
import os
import subprocess
import textwrap
from pathlib import Path

from .servers import free_port, stop, wait_for_port

NGINX = "/usr/sbin/nginx"

# Headers the app sets on a signed-link answer that nginx would not pass on after an internal
# redirect (it keeps Content-Type, Content-Disposition, Cache-Control, Accept-Ranges and a few
# others itself).
COPIED_HEADERS = [
    "ETag",
    "X-Checksum-Sha256",
    "Repr-Digest",
    "X-Content-Type-Options",
    "Content-Security-Policy",
    "Referrer-Policy",
    "X-Robots-Tag",
    "X-Frame-Options",
    "Cross-Origin-Opener-Policy",
]


def _internal_location(path: str, root: Path, *, ranges: bool, error_log: Path) -> str:
    copies = "\n".join(
        f"    add_header {name} $upstream_http_{name.lower().replace('-', '_')} always;"
        for name in COPIED_HEADERS
    )
    return (
        f"  location {path} {{\n"
        "    internal;\n"
        # nginx's error log prints the request line, query (the signature) included: only
        # critical errors from here.
        f"    error_log {error_log} crit;\n"
        f"    alias {root}/;\n"
        "    etag off;\n"
        "    if_modified_since off;\n"
        '    add_header Last-Modified "";\n'
        # The app decides every range: whole files come here with "full/", where nginx ignores
        # Range; one range the app read comes to the other location. Never a multipart answer.
        + ("    max_ranges 1;\n" if ranges else "    max_ranges 0;\n")
        + copies
        + "\n  }\n"
    )


def nginx_conf(
    *, prefix: Path, port: int, upstream_port: int, artifact_root: Path, baseline: bool = False
) -> str:
    # Started as root, nginx would run its workers as "nobody", who cannot read a private
    # artifact root: run them as the user the app runs as (in production: give nginx's user
    # read access to ARTIFACT_ROOT instead).
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    error_log = prefix / "error.log"
    internal = _internal_location(
        "/_artifacts/full/", artifact_root, ranges=False, error_log=error_log
    ) + _internal_location("/_artifacts/", artifact_root, ranges=True, error_log=error_log)
    # Benchmarks only: the same files straight from disk, no app. Never in the reference
    # configuration: every blob would be reachable by name with no link, no expiry and no
    # revocation (an X-Accel-Redirect seen once would be a permanent URL).
    static_baseline = (
        f"    location /static-baseline/ {{ alias {artifact_root}/; }}\n" if baseline else ""
    )
    return (
        textwrap.dedent(
            f"""\
        {user}worker_processes 1;
        daemon off;
        pid {prefix}/nginx.pid;
        error_log {prefix}/error.log warn;
        events {{ worker_connections 1024; }}
        http {{
          # No query string in the access log: signed links carry their signature there.
          log_format noquery '$remote_addr [$time_local] "$request_method $uri" $status '
                             '$body_bytes_sent';
          access_log {prefix}/access.log noquery;
          client_body_temp_path {prefix}/body;
          proxy_temp_path {prefix}/proxy;
          fastcgi_temp_path {prefix}/fastcgi;
          uwsgi_temp_path {prefix}/uwsgi;
          scgi_temp_path {prefix}/scgi;
          default_type application/octet-stream;
          sendfile on;
          tcp_nopush on;
          # Connections to the app are kept and reused: a new TCP connection per request cost
          # gunicorn an accept and a hand-off to a thread on every signed link. Closed by nginx
          # before gunicorn's keepalive (5 s, gunicorn.conf.py) would close them itself.
          upstream artifactcourier {{
            server 127.0.0.1:{upstream_port};
            keepalive 16;
            keepalive_timeout 4s;
          }}
          server {{
            listen 127.0.0.1:{port};
            client_max_body_size 0;
        """
        )
        + static_baseline
        + textwrap.indent(internal, "    ")
        + textwrap.dedent(
            f"""\
            location /dl/ {{
              error_log {prefix}/error.log crit;
              proxy_pass http://artifactcourier;
              proxy_set_header Host $http_host;
              proxy_set_header X-Forwarded-For $remote_addr;
              proxy_http_version 1.1;
              proxy_set_header Connection "";
            }}
            location / {{
              proxy_pass http://artifactcourier;
              proxy_set_header Host $http_host;
              proxy_set_header X-Forwarded-For $remote_addr;
              proxy_request_buffering off;
              proxy_http_version 1.1;
              proxy_set_header Connection "";
            }}
          }}
        }}
        """
        )
    )


class Nginx:
    def __init__(
        self, prefix: Path, upstream_port: int, artifact_root: Path, *, baseline: bool = False
    ) -> None:
        self.prefix = prefix
        prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(
            nginx_conf(
                prefix=prefix,
                port=self.port,
                upstream_port=upstream_port,
                artifact_root=artifact_root,
                baseline=baseline,
            )
        )
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, self.proc)
        except BaseException:
            stop(self.proc)
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop(self.proc)
