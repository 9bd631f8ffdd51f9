"""Secrets of subscriptions: encryption at rest and the Standard Webhooks signature.

Encryption is Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a MultiFernet:
the first key of WEBHOOK_ENCRYPTION_KEYS encrypts, every key decrypts, so keys rotate.
Signing follows the Standard Webhooks spec (standardwebhooks.com, "Signature scheme"):
``v1,`` + base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")), secret given as
``whsec_`` + base64; several signatures are separated by spaces.
"""

import base64
import hashlib
import hmac
import secrets
from functools import cache

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


@cache
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        # Derived from SECRET_KEY so the embedded mode needs no extra setting.
        digest = hashlib.sha256(b"artifactcourier webhook secrets:" + secret_key.encode())
        keys = (base64.urlsafe_b64encode(digest.digest()).decode(),)
    return MultiFernet([Fernet(k.encode()) for k in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.WEBHOOK_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode() if value else ""


def decrypt(value: str) -> str:
    return fernet().decrypt(value.encode()).decode() if value else ""


def reencrypt(value: str) -> str:
    """Re-encrypt under the current first key (after a key was prepended)."""
    return fernet().rotate(value.encode()).decode() if value else ""


def signing_secret_generate() -> str:
    # 24 random bytes, as the spec's examples; receivers base64-decode what follows whsec_.
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_header(*, secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(
        signature(secret=s, msg_id=msg_id, timestamp=timestamp, body=body) for s in secrets_
    )
