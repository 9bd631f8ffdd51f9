import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokens import crypto
from tokens.logging import RedactSecretsFilter

ROOT = Path(__file__).resolve().parents[2]


# A deployment (PostgreSQL) with secrets strong enough to start.
STRONG = "s" * 40
DEPLOYMENT = {
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
    "SECRET_KEY": STRONG,
    "TOKEN_PEPPER": STRONG,
}


def start_django(env_overrides: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "TOKEN_PEPPER"}}
    env.update({"AC_DATA_DIR": str(tmp_path), **env_overrides})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "artifactcourier.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deployment_without_a_secret_refuses_to_start(tmp_path):
    result = start_django({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test"}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_deployment_with_a_weak_secret_refuses_to_start(tmp_path):
    result = start_django(
        {
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
            "SECRET_KEY": "django-insecure-changeme",
        },
        tmp_path,
    )
    assert result.returncode != 0
    assert "too weak" in result.stderr


@pytest.mark.parametrize("secrets", ["changeme", "x" * 40 + ",old-secret"])
def test_deployment_with_a_weak_link_signing_secret_refuses_to_start(tmp_path, secrets):
    """Each signed link is an offline test of a guessed secret (its message is in the URL): a
    guessable one lets anyone holding a link forge links for every build."""
    result = start_django({**DEPLOYMENT, "SHARE_SIGNING_SECRETS": secrets}, tmp_path)
    assert result.returncode != 0
    assert "SHARE_SIGNING_SECRETS" in result.stderr and "too weak" in result.stderr
    assert secrets.split(",")[-1] not in result.stderr
    fine = start_django({**DEPLOYMENT, "SHARE_SIGNING_SECRETS": f"{STRONG},{'t' * 32}"}, tmp_path)
    assert fine.stdout.strip() == "started", fine.stderr


def test_embedded_mode_generates_and_keeps_its_secrets(tmp_path):
    env = {"DATABASE_URL": ""}
    assert start_django(env, tmp_path).stdout.strip() == "started"
    first = (tmp_path / "secrets.json").read_text()
    assert start_django(env, tmp_path).returncode == 0
    assert (tmp_path / "secrets.json").read_text() == first
    assert oct((tmp_path / "secrets.json").stat().st_mode & 0o777) == "0o600"


@pytest.mark.django_db
def test_argon2_hashes_admin_passwords(client):
    """What is stored for a new admin user is an Argon2id hash, and signing in with it works."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root", password="a long passphrase 42")
    stored = get_user_model().objects.get(pk=user.pk).password
    assert stored.startswith("argon2$argon2id$")
    assert "a long passphrase 42" not in stored
    assert client.login(username="root", password="a long passphrase 42")
    assert not client.login(username="root", password="a long passphrase 43")


@pytest.mark.parametrize(
    "message",
    [
        "auth with {token}",
        "GET /dl/build/1?exp=1&kid=2&sig=c2VjcmV0c2ln HTTP/1.1",
        "header Authorization: Bearer {token}",
    ],
)
def test_logging_filter_redacts_tokens_and_signatures(message, caplog):
    token = crypto.token_generate("build")
    logger = logging.getLogger("artifactcourier.test")
    logger.addFilter(RedactSecretsFilter())
    with caplog.at_level(logging.INFO, logger="artifactcourier.test"):
        logger.info(message.format(token=token))
    text = caplog.text
    assert token not in text
    assert "c2VjcmV0c2ln" not in text
    assert "redacted" in text


def test_configured_handlers_redact_messages_and_tracebacks(capsys):
    """Through the LOGGING configuration the service runs with, not a hand-made logger."""
    token = crypto.token_generate("derived")
    # The console handler LOGGING configures (pytest adds capture handlers of its own types).
    ours = [h for h in logging.getLogger().handlers if type(h) is logging.StreamHandler]
    assert ours, "LOGGING configures a console handler"
    for handler in ours:
        assert any(isinstance(f, RedactSecretsFilter) for f in handler.filters), handler
    handler = ours[0]
    stream = io.StringIO()
    old_stream = handler.setStream(stream)
    try:
        logging.getLogger("django.request").error("refused Bearer %s", token)
        try:
            raise ValueError(f"bad token {token} in /dl/x?exp=1&sig=c2VjcmV0c2ln")
        except ValueError:
            logging.getLogger("artifactcourier").exception("while serving")
    finally:
        handler.setStream(old_stream)
    text = stream.getvalue()
    assert "while serving" in text and "ValueError" in text
    assert token not in text
    assert "c2VjcmV0c2ln" not in text


@pytest.mark.parametrize(
    "base", ["courier.example", "ftp://courier.example", "https://courier.example/" + "p" * 600]
)
def test_a_public_base_url_no_link_could_start_with_refuses_to_start(tmp_path, base):
    """Every link the service hands out starts with PUBLIC_BASE_URL: not a URL, or a path
    leaving no room in a request line for the longest artifact path, is refused at start."""
    result = start_django({**DEPLOYMENT, "PUBLIC_BASE_URL": base}, tmp_path)
    assert result.returncode != 0
    assert "PUBLIC_BASE_URL" in result.stderr
    fine = start_django(
        {**DEPLOYMENT, "PUBLIC_BASE_URL": "https://courier.example/courier/"}, tmp_path
    )
    assert fine.stdout.strip() == "started", fine.stderr
