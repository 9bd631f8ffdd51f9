"""Settings, driven by the environment.

With nothing set, the service runs in *embedded* mode: SQLite under ``AC_DATA_DIR``, artifacts
on the local filesystem and a Celery broker on the filesystem (kombu's filesystem transport),
so ``make run`` works on a laptop with no servers. Setting ``DATABASE_URL`` means a real
deployment: then ``SECRET_KEY`` and ``TOKEN_PEPPER`` must come from the environment too.
"""

import hashlib
import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("AC_DATA_DIR", BASE_DIR / "var")).resolve()


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DATABASE_URL = os.environ.get("DATABASE_URL", "")
EMBEDDED = not DATABASE_URL or DATABASE_URL.startswith("sqlite")

# --- Embedded data directory: private to the user running the service -----------------------
# It holds the database (sessions, key digests, deploy seeds), the generated secrets and the
# artifacts: a 0700 directory, and files created 0600 by every embedded process (manage.py
# commands, web, worker), including SQLite's own, which follow the umask.
if EMBEDDED:
    os.umask(0o077)
    DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    DATA_DIR.chmod(0o700)  # also tightens a directory made by an older version
    # Stored blobs get this mode explicitly (Django's default is 0644, whatever the umask).
    FILE_UPLOAD_PERMISSIONS = 0o600
    FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700


def _embedded_secrets() -> dict[str, str]:
    """Generate once and persist the embedded mode's secrets, so restarts keep tokens valid."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {"SECRET_KEY": secrets.token_urlsafe(50), "TOKEN_PEPPER": secrets.token_urlsafe(32)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


def _secret(name: str) -> str:
    value = os.environ.get(name, "")
    if value:
        if not EMBEDDED and (len(value) < 32 or value.startswith("django-insecure")):
            raise ImproperlyConfigured(
                f"{name} is too weak for a deployment: use at least 32 random characters."
            )
        return value
    if EMBEDDED:
        return _embedded_secrets()[name]
    raise ImproperlyConfigured(
        f"{name} is not set. A deployment (DATABASE_URL is set) refuses to start without a real "
        f"secret; generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )


SECRET_KEY = _secret("SECRET_KEY")
# Keyed hash for API tokens: only HMAC-SHA256(TOKEN_PEPPER, token) is stored.
TOKEN_PEPPER = _secret("TOKEN_PEPPER")

DEBUG = env_bool("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
# Absolute base for links the service hands out (pre-signed URLs, status_url in webhooks).
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# Every link starts with it: its own path leaves the rest of a request line (4094 bytes in all)
# to the longest artifact path (ARTIFACT_PATH_MAX_URL_BYTES) and a signature.
_public = urlsplit(PUBLIC_BASE_URL)
if _public.scheme not in {"http", "https"} or not _public.hostname or len(_public.path) > 512:
    raise ImproperlyConfigured(
        "PUBLIC_BASE_URL must be an http(s) URL whose path is at most 512 characters: links "
        "under it must fit a request line."
    )

INSTALLED_APPS = [
    "artifactcourier.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tokens",
    "builds",
    "artifacts",
    "webhooks",
]

MIDDLEWARE = [
    # First: sends LEAN_PATH_PREFIXES through LEAN_MIDDLEWARE only (artifactcourier/pipeline.py).
    "artifactcourier.pipeline.LeanPaths",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "artifactcourier.middleware.TransferCodings",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "artifactcourier.middleware.PrivateApiResponses",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# Signed links (/dl/) carry their credential in the URL and use none of the admin's sessions,
# CSRF, users or messages, nor static files: they skip those middleware. Every middleware that
# sets a response header (security headers, X-Frame-Options, Content-Length) stays.
LEAN_PATH_PREFIXES = ["/dl/"]
LEAN_MIDDLEWARE = [
    path
    for path in MIDDLEWARE
    if path
    not in {
        "artifactcourier.pipeline.LeanPaths",
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "artifactcourier.middleware.PrivateApiResponses",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    }
]

ROOT_URLCONF = "artifactcourier.urls"
# The admin's rotate action shows a new token once in a message: keep messages server-side
# (the default cookie storage is signed, not encrypted).
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
WSGI_APPLICATION = "artifactcourier.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

if EMBEDDED and not DATABASE_URL:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            # Each server thread keeps its connection between requests, as on PostgreSQL:
            # opening one (the file, the PRAGMAs below, Django's SQL functions) costs more than
            # a signed link's whole query. Requests run in autocommit, so no transaction (and
            # no WAL snapshot) outlives a request.
            "CONN_MAX_AGE": 60,
            # WAL lets the web process read while the worker writes; IMMEDIATE avoids
            # "database is locked" on lock upgrade inside transactions.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
else:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=60,
            # A persistent connection the server dropped (restart, failover, an idle timeout,
            # pg_terminate_backend) is found at the next request's first query and replaced,
            # instead of failing that request.
            conn_health_checks=True,
        )
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's, with the query deadline on what it sends past its cursors.
        DATABASES["default"]["ENGINE"] = "artifactcourier.postgresql"
        # An unreachable server fails a request in seconds (503), not after the OS's timeout.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
            "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 5)
        )
# A web request's statements get this many seconds each (PostgreSQL; 0: no limit): the server
# cancels one that runs or waits on a lock that long, and one a hung server never answers is
# abandoned a second later, 503 (artifactcourier/query_deadline.py). The worker and management
# commands are not limited.
DATABASE_QUERY_TIMEOUT = env_int("DATABASE_QUERY_TIMEOUT", 20)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- Storage --------------------------------------------------------------------------------
STORAGE_BACKEND = os.environ.get("STORAGE_BACKEND", "filesystem")
ARTIFACT_ROOT = Path(os.environ.get("ARTIFACT_ROOT", DATA_DIR / "artifacts"))
if STORAGE_BACKEND == "s3":
    _artifact_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("AWS_STORAGE_BUCKET_NAME", "artifactcourier"),
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
            "access_key": os.environ.get("AWS_ACCESS_KEY_ID") or None,
            "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
            "file_overwrite": True,
            "querystring_expire": env_int("AWS_QUERYSTRING_EXPIRE", 60),
        },
    }
elif STORAGE_BACKEND == "filesystem":
    _artifact_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": ARTIFACT_ROOT},
    }
else:
    raise ImproperlyConfigured("STORAGE_BACKEND must be 'filesystem' or 's3'.")
STORAGES = {
    "default": _artifact_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Celery ---------------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL or "filesystem://")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", REDIS_URL or None)
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    (_broker_dir / "queue").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
    (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # kombu's default is ./control, relative to the working directory (the repository).
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_BEAT_SCHEDULE: dict = {}

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tokens.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tokens.permissions.HasScope"],
    "DEFAULT_PAGINATION_CLASS": "artifactcourier.api.Pagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "artifactcourier.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["artifactcourier.parsers.SafeJSONRenderer"],
    # JSON only: a form or multipart body is 415, never read as an empty object.
    "DEFAULT_PARSER_CLASSES": ["artifactcourier.parsers.SafeJSONParser"],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "artifactcourier API",
    "DESCRIPTION": "Artifact storage for CI with credentials scoped to the least a job needs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "BuildStateEnum": "builds.models.Build.State",
        "StatusStateEnum": "builds.models.StatusCheck.State",
    },
}

# --- Credentials ----------------------------------------------------------------------------
# last_used_at / last_used_ip are written at most this often per key.
KEY_LAST_USED_INTERVAL = env_int("KEY_LAST_USED_INTERVAL", 60)

# --- Logging: tokens and signatures never reach a log line ------------------------------------
# Every handler carries the one redaction (tokens.logging): Django's default handlers are
# replaced, not kept beside ours (its "django" logger's console and mail_admins, and
# "django.server"), so no record reaches a stream or a mail unfiltered. gunicorn's own logs go
# through the same filter (artifactcourier.gunicorn_logging), Celery's too (celery.py).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "tokens.logging.RedactSecretsFilter"},
        "require_debug_false": {"()": "django.utils.log.RequireDebugFalse"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["redact"]},
        "mail_admins": {
            "level": "ERROR",
            "class": "django.utils.log.AdminEmailHandler",
            "filters": ["require_debug_false", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": ["mail_admins"], "level": "INFO", "propagate": True},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
# Deploy tokens live at most this long (they are rotated well before).
DEPLOY_TOKEN_MAX_DAYS = env_int("DEPLOY_TOKEN_MAX_DAYS", 365)
# Tripwire: this many denied write attempts by one key within the window revoke it.
TRIPWIRE_WRITE_DENIALS = env_int("TRIPWIRE_WRITE_DENIALS", 5)
TRIPWIRE_WINDOW_SECONDS = env_int("TRIPWIRE_WINDOW_SECONDS", 3600)
# Derived keys (POST /api/v1/keys/) live at most this long, and never beyond their parent.
KEY_DERIVED_MAX_SECONDS = env_int("KEY_DERIVED_MAX_SECONDS", 30 * 86400)
# How many derivations deep a key may sit (a build key is depth 0).
KEY_DERIVE_MAX_DEPTH = env_int("KEY_DERIVE_MAX_DEPTH", 8)
# After a deploy token is rotated, the previous one keeps working this long, then is dead.
DEPLOY_TOKEN_ROTATION_GRACE_SECONDS = env_int("DEPLOY_TOKEN_ROTATION_GRACE_SECONDS", 86400)
# Long-lived keys (deploy, project) expiring within these many days are reported and audited
# once per threshold (manage.py key_expiry_warnings, and the periodic task below).
KEY_EXPIRY_WARNING_DAYS = [int(d) for d in env_list("KEY_EXPIRY_WARNING_DAYS", "30,7")]
CELERY_BEAT_SCHEDULE["tokens.key_expiry_warn"] = {
    "task": "tokens.key_expiry_warn",
    "schedule": env_int("KEY_EXPIRY_WARNING_EVERY_SECONDS", 6 * 3600),
}
# No OPTIONS metadata: DRF's would probe write permissions and audit them as denials.
REST_FRAMEWORK["DEFAULT_METADATA_CLASS"] = None

# --- Artifacts ------------------------------------------------------------------------------
MiB = 1024 * 1024
ARTIFACT_MAX_SIZE = env_int("ARTIFACT_MAX_SIZE", 10 * 1024 * MiB)
BUILD_ARTIFACTS_QUOTA = env_int("BUILD_ARTIFACTS_QUOTA", 50 * 1024 * MiB)
PROJECT_ARTIFACTS_QUOTA = env_int("PROJECT_ARTIFACTS_QUOTA", 1024 * 1024 * MiB)
ARTIFACT_PATH_MAX_LENGTH = 1024
ARTIFACT_PATH_SEGMENT_MAX_LENGTH = 255
# ... and at most this many bytes once percent-encoded in a URL (UTF-8, everything but
# unreserved characters and '/' encoded: a 3-byte character takes 9). Every stored path must
# fit in a request line with room for the rest (gunicorn takes lines of up to 4094 bytes): a
# batch member could otherwise become an artifact that no GET could ever name.
ARTIFACT_PATH_MAX_URL_BYTES = 3000
# Bytes read from the request body per step (one reused buffer; hashed inline).
ARTIFACT_UPLOAD_CHUNK_SIZE = env_int("ARTIFACT_UPLOAD_CHUNK_SIZE", 4 * MiB)
ARTIFACT_S3_PART_SIZE = env_int("ARTIFACT_S3_PART_SIZE", 16 * MiB)
# S3 only: answer artifact GETs with a 302 to a pre-signed URL valid this long, so the bytes
# never pass through Django. Off by default: the API promises its own headers on the response.
ARTIFACT_S3_REDIRECT = env_bool("ARTIFACT_S3_REDIRECT")
ARTIFACT_REDIRECT_EXPIRES = env_int("ARTIFACT_REDIRECT_EXPIRES", 60)
# Retention keeps an unreferenced blob this long after an upload last touched it, so an upload
# of the same bytes in flight never loses them (also the age of abandoned staging files).
ARTIFACT_BLOB_GRACE_SECONDS = env_int("ARTIFACT_BLOB_GRACE_SECONDS", 24 * 3600)
CELERY_BEAT_SCHEDULE["artifacts.retention_purge"] = {
    "task": "artifacts.retention_purge",
    "schedule": env_int("ARTIFACT_RETENTION_EVERY_SECONDS", 3600),
}
# Write denials this soon after a key's build finished are not tripwire input: a job still
# running when its build was canceled keeps trying to upload with a key it legitimately held.
TRIPWIRE_FINISH_GRACE_SECONDS = env_int("TRIPWIRE_FINISH_GRACE_SECONDS", 300)

# --- Serving --------------------------------------------------------------------------------
# An upload whose body sends no byte for this many seconds is cut (408, nothing stored), so a
# stalled client frees its thread; 0 waits forever. A slow upload that keeps sending is never
# cut. Applies under gunicorn (the server `make run` and the compose stack use).
ARTIFACT_UPLOAD_IDLE_TIMEOUT = env_int("ARTIFACT_UPLOAD_IDLE_TIMEOUT", 60)

# --- Refusals: audit volume ---------------------------------------------------------------------
# Rows one live key's refusals may add per action (denied / write denied) per
# TRIPWIRE_WINDOW_SECONDS; past that the newest row counts the repeats. Never below
# TRIPWIRE_WRITE_DENIALS (the tripwire counts these rows).
AUDIT_REFUSALS_PER_WINDOW = env_int("AUDIT_REFUSALS_PER_WINDOW", 20)
# Longest string kept in an audit row's detail (a request path, a message); longer ones are cut
# and marked, so a hostile 1 MB URL costs the audit table a few hundred bytes.
AUDIT_DETAIL_MAX_CHARS = env_int("AUDIT_DETAIL_MAX_CHARS", 512)

# --- Sharing: signed /dl/ links ---------------------------------------------------------------
# HMAC secrets for signed links, comma-separated: links are signed with the first and accepted
# with any, so a new secret goes first and the old one stays listed until its links expire.
# Embedded default: derived from SECRET_KEY (a deployment sets its own).
SHARE_SIGNING_SECRETS = env_list("SHARE_SIGNING_SECRETS") or [
    hashlib.sha256(f"share-signing:{SECRET_KEY}".encode()).hexdigest()
]
# Every link is an offline test of a guess (its message is in the URL): a deployment refuses a
# short secret as it refuses a short SECRET_KEY, still listed or not (any listed one verifies).
if not EMBEDDED and any(len(secret) < 32 for secret in SHARE_SIGNING_SECRETS):
    raise ImproperlyConfigured(
        "SHARE_SIGNING_SECRETS holds a secret too weak for a deployment: use at least 32 random "
        "characters for each."
    )
# A share's links live this long unless the request says otherwise, and at most SHARE_MAX_SECONDS
# (never beyond the sharer's own expiry).
SHARE_DEFAULT_SECONDS = env_int("SHARE_DEFAULT_SECONDS", 3600)
SHARE_MAX_SECONDS = env_int("SHARE_MAX_SECONDS", 7 * 86400)
SHARE_MAX_PATHS = env_int("SHARE_MAX_PATHS", 1000)
# A signed listing answers at most this many files per request (JSON and page alike), with a
# link to the next page: a listing's cost per request stays bounded, whatever the build holds.
SHARE_LISTING_PAGE_SIZE = max(1, env_int("SHARE_LISTING_PAGE_SIZE", 1000))
# Live (unexpired, unrevoked) shares per build: every share mints a key, so an unbounded number
# of requests (an untrusted build's job, say) would grow the key table without end.
SHARE_MAX_LIVE_PER_BUILD = env_int("SHARE_MAX_LIVE_PER_BUILD", 100)
# How /dl/ artifact links are served: "direct" (the app streams the bytes), "x-accel" (the app
# answers X-Accel-Redirect to SHARE_X_ACCEL_LOCATION, an nginx `internal` location aliased to
# ARTIFACT_ROOT, and nginx streams from disk), or "s3" (302 to a short-lived S3 URL).
SHARE_SERVE_MODE = os.environ.get("SHARE_SERVE_MODE", "direct")
if SHARE_SERVE_MODE not in {"direct", "x-accel", "s3"}:
    raise ImproperlyConfigured("SHARE_SERVE_MODE must be 'direct', 'x-accel' or 's3'.")
SHARE_X_ACCEL_LOCATION = os.environ.get("SHARE_X_ACCEL_LOCATION", "/_artifacts/")
# S3 URLs handed to clients are signed for this endpoint (the one clients reach), not the
# internal AWS_S3_ENDPOINT_URL the app talks to (e.g. http://minio:9000 in compose).
AWS_S3_PUBLIC_ENDPOINT_URL = os.environ.get("AWS_S3_PUBLIC_ENDPOINT_URL", "")

# --- Authentication on PostgreSQL -----------------------------------------------------------------
# The per-request key lookup binds its parameters on the server, so PostgreSQL prepares it once
# per connection (tokens.models._hot_cursor). Set to false behind a transaction-mode pooler that
# cannot keep prepared statements (PgBouncer before 1.21).
AUTH_PREPARED_STATEMENTS = env_bool("AUTH_PREPARED_STATEMENTS", True)
if AUTH_PREPARED_STATEMENTS and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Django turns psycopg's preparing off (prepare_threshold None), which also refuses an
    # explicit prepare=True. A threshold no query reaches keeps automatic preparing off (and
    # Django's own client-side binding cursors never prepare) while allowing the explicit one.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 2**31)

# --- Dependencies: timeouts, retries, 503 ---------------------------------------------------
# Every call to the object store is bounded: a store that accepts connections but never answers
# costs a request at most about connect/read timeout x attempts, then a 503 with Retry-After,
# instead of holding a server thread for minutes.
AWS_S3_CONNECT_TIMEOUT = float(os.environ.get("AWS_S3_CONNECT_TIMEOUT", "3"))
# Per socket read, not per request: a large part upload or download that keeps moving is fine.
AWS_S3_READ_TIMEOUT = float(os.environ.get("AWS_S3_READ_TIMEOUT", "10"))
# Total attempts per call, first included (botocore "standard" mode: exponential backoff with
# jitter, retries throttling, 5xx and connection errors only).
AWS_S3_MAX_ATTEMPTS = env_int("AWS_S3_MAX_ATTEMPTS", 2)
# Circuit breaker: after this many unavailability errors in a row (0: never), a process answers
# 503 at once for AWS_S3_BREAKER_SECONDS without calling the store, so a dead store cannot tie
# up every server thread (and /healthz behind them) for the length of its timeouts.
AWS_S3_BREAKER_FAILURES = env_int("AWS_S3_BREAKER_FAILURES", 3)
AWS_S3_BREAKER_SECONDS = env_int("AWS_S3_BREAKER_SECONDS", 10)


def s3_client_config():
    from botocore.config import Config

    return Config(
        connect_timeout=AWS_S3_CONNECT_TIMEOUT,
        read_timeout=AWS_S3_READ_TIMEOUT,
        retries={"max_attempts": AWS_S3_MAX_ATTEMPTS, "mode": "standard"},
    )


# django-storages builds its boto3 client with this (unless a storage's OPTIONS give their own).
AWS_S3_CLIENT_CONFIG = s3_client_config()
# Retry-After (seconds) on a 503 for a dependency (object store, database) that is unavailable.
DEPENDENCY_RETRY_AFTER_SECONDS = env_int("DEPENDENCY_RETRY_AFTER_SECONDS", 5)
# Reconciliation (part of the retention task) leaves objects and multipart uploads younger than
# this alone: it must exceed the longest upload (an upload in flight has an open multipart
# upload, and a moment between completing it and recording its row).
ARTIFACT_ORPHAN_GRACE_SECONDS = env_int("ARTIFACT_ORPHAN_GRACE_SECONDS", 24 * 3600)

# --- Hostile input --------------------------------------------------------------------------
# JSON bodies nest arrays/objects at most this deep (400 json_too_deep).
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", 32)

# --- Webhooks (downstream subscriptions) ------------------------------------------------------
# Fernet keys (comma-separated, newest first) encrypting subscriptions' secrets at rest; rotate by
# prepending a new key and running `manage.py webhooks_reencrypt`. Default: one derived from
# SECRET_KEY (so the embedded mode needs nothing); a deployment should set its own.
WEBHOOK_ENCRYPTION_KEYS = env_list("WEBHOOK_ENCRYPTION_KEYS")
# Plain http targets (and http+sigv4) are refused unless this is on (the embedded default).
WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", EMBEDDED)
# Networks a target may resolve into although they are not public (CIDRs, comma-separated).
WEBHOOK_ALLOWED_NETWORKS = env_list("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.1/32" if EMBEDDED else "")
WEBHOOK_CONNECT_TIMEOUT = float(os.environ.get("WEBHOOK_CONNECT_TIMEOUT", "5"))
# Whole-response budget: a receiver dripping bytes cannot hold a worker longer than this.
WEBHOOK_READ_TIMEOUT = float(os.environ.get("WEBHOOK_READ_TIMEOUT", "15"))
WEBHOOK_RESPONSE_MAX_BYTES = env_int("WEBHOOK_RESPONSE_MAX_BYTES", 64 * 1024)
WEBHOOK_RESPONSE_EXCERPT_CHARS = env_int("WEBHOOK_RESPONSE_EXCERPT_CHARS", 1000)
# Seconds before attempt 1, 2, ... (Svix's schedule); each delay gets +-20 % jitter.
WEBHOOK_RETRY_SCHEDULE = [
    float(s) for s in env_list("WEBHOOK_RETRY_SCHEDULE", "0,5,300,1800,7200,18000,36000,36000")
]
# A Retry-After longer than this is capped (a receiver cannot park a delivery for days).
WEBHOOK_RETRY_AFTER_MAX_SECONDS = env_int("WEBHOOK_RETRY_AFTER_MAX_SECONDS", 36000)
# This many deliveries in a row that exhausted their retries disable the subscription.
WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES = env_int("WEBHOOK_DISABLE_AFTER_FAILED_DELIVERIES", 3)
# Pre-signed links in a payload expire this long after the attempt that carries them.
WEBHOOK_LINK_EXPIRES_SECONDS = env_int("WEBHOOK_LINK_EXPIRES_SECONDS", 24 * 3600)
# A payload lists at most this many artifacts' links (the first in path order), and says
# "artifacts_truncated" when the build holds more: its listing_url pages through them all. A
# build of 100,000 files would otherwise make a payload of tens of megabytes, past what
# receivers take (a Lambda function URL: 6 MB), signed anew on every attempt.
WEBHOOK_PAYLOAD_MAX_ARTIFACTS = max(0, env_int("WEBHOOK_PAYLOAD_MAX_ARTIFACTS", 1000))
# After rotate-secret, the superseded signing secret keeps signing (one more signature) this long,
# however many rotations follow within that time.
WEBHOOK_SECRET_ROTATION_GRACE_SECONDS = env_int("WEBHOOK_SECRET_ROTATION_GRACE_SECONDS", 86400)
# At most this many superseded secrets sign alongside the current one; beyond it the oldest stops
# signing before its grace ends (bounds the webhook-signature header and the row). 0: none.
WEBHOOK_SECRET_PREVIOUS_MAX = env_int("WEBHOOK_SECRET_PREVIOUS_MAX", 5)
# A send task is killed after this (connect + read + minting); an attempt holds its delivery
# (a lease) a little longer, so a second run of the task never sends alongside the first.
WEBHOOK_TASK_TIME_LIMIT = int(WEBHOOK_CONNECT_TIMEOUT + WEBHOOK_READ_TIMEOUT + 10)
WEBHOOK_LEASE_SECONDS = env_int("WEBHOOK_LEASE_SECONDS", WEBHOOK_TASK_TIME_LIMIT + 10)
# Retries due within this many seconds are queued with a countdown; later ones by the sweeper.
WEBHOOK_COUNTDOWN_MAX_SECONDS = env_int("WEBHOOK_COUNTDOWN_MAX_SECONDS", 60)
# The sweeper re-queues due deliveries whose queued task has not started within this long
# (lost with a broker outage or a killed worker).
WEBHOOK_REQUEUE_AFTER_SECONDS = env_int("WEBHOOK_REQUEUE_AFTER_SECONDS", 120)
CELERY_BEAT_SCHEDULE["webhooks.deliveries_sweep"] = {
    "task": "webhooks.deliveries_sweep",
    "schedule": float(os.environ.get("WEBHOOK_SWEEP_EVERY_SECONDS", "30")),
}
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]["WebhookEventEnum"] = "webhooks.models.Event"
# Publishing a task tries the broker once instead of retrying for seconds: a finish request
# never waits on a broker that is down (its deliveries sit in the outbox; the sweeper queues
# them when the broker is back). Consuming workers keep their own reconnect policy.
if not CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"max_retries": env_int("CELERY_PUBLISH_MAX_RETRIES", 0)}

# --- Many small artifacts: file-count quota, batch uploads -------------------------------------
# A build may hold at most this many artifacts (413 beyond): the byte quota alone lets 0-byte
# uploads create rows without bound.
BUILD_ARTIFACTS_MAX_FILES = env_int("BUILD_ARTIFACTS_MAX_FILES", 100_000)
# A batch upload (tar stream) may expand to at most this many bytes per byte of request body
# (compressed archives only): past it, the archive is taken for a decompression bomb (413).
ARTIFACT_BATCH_MAX_EXPANSION = env_int("ARTIFACT_BATCH_MAX_EXPANSION", 200)
# S3 only: threads per process writing a batch's small members to the store at once (each a
# request that waits on the network), shared by every batch the process serves.
ARTIFACT_BATCH_S3_WRITERS = env_int("ARTIFACT_BATCH_S3_WRITERS", 8)
# Downstream status reports: distinct contexts one build may hold.
STATUS_CONTEXTS_PER_BUILD = env_int("STATUS_CONTEXTS_PER_BUILD", 100)
# Reports kept per context (the latest ones); older ones are dropped as new ones arrive, so a
# downstream re-reporting forever keeps its build's history bounded.
STATUS_HISTORY_PER_CONTEXT = env_int("STATUS_HISTORY_PER_CONTEXT", 20)
