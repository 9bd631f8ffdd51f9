"""Signed download URLs: pure functions, no database.

A signed URL is ``<base>/dl/builds/<id>/<path>?exp=<unix seconds>&kid=<key id>&sig=<signature>``.
The signature is ``base64url(HMAC-SHA256(secret, message))`` without padding (RFC 4648 §5),
where ``message`` is, joined with ``\\n``::

    ac-dl-v1
    GET
    /dl/builds/12/dist/app.tar.gz      (the URL's path, percent-decoded, UTF-8)
    1767225600                         (exp)
    42                                 (kid)

The first line names the scheme, so a MAC made for anything else with the same secret never
verifies as a link. Artifact paths hold no control characters and ``exp``/``kid`` are digits,
so the fields cannot run into each other. Links are signed for GET; HEAD asks for GET's
metadata (RFC 9110 §9.3.2) and is verified as GET.

Secrets come from ``SHARE_SIGNING_SECRETS``, a list: links are signed with the first and
verified against every one, so a new secret can be put first while links signed with the old
one keep working until it is removed.
"""

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote, unquote, urlencode, urlsplit

from django.conf import settings

SCHEME = "ac-dl-v1"
# RFC 3986 unreserved characters plus "/": what a path keeps unescaped in a link we hand out.
_PATH_SAFE = "/-._~"
# A base64url HMAC-SHA256 without padding is 43 characters; anything longer is not ours.
_SIG_LENGTH = 43
# Both fit a signed 64-bit integer (database ids, Unix seconds) with room to spare.
_MAX_DIGITS = 18


class Invalid(StrEnum):
    """Why a link does not verify (the ``code`` of the 403)."""

    MALFORMED = "malformed_link"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "link_expired"


@dataclass(frozen=True)
class SignedParams:
    exp: int
    kid: int


class LinkInvalid(Exception):
    def __init__(self, code: Invalid, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _secrets(secrets: Sequence[str] | None) -> Sequence[str]:
    found = settings.SHARE_SIGNING_SECRETS if secrets is None else secrets
    if not found:
        raise ValueError("SHARE_SIGNING_SECRETS is empty: no secret to sign links with.")
    return found


def message(*, method: str, path: str, exp: int, kid: int) -> bytes:
    return "\n".join([SCHEME, method, path, str(exp), str(kid)]).encode("utf-8")


def signature(*, secret: str, method: str, path: str, exp: int, kid: int) -> str:
    mac = hmac.new(
        secret.encode("utf-8"), message(method=method, path=path, exp=exp, kid=kid), hashlib.sha256
    )
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def sign_path(
    *, path: str, exp: int, kid: int, method: str = "GET", secrets: Sequence[str] | None = None
) -> str:
    """``path`` (decoded, starting with ``/dl/``) as a signed, percent-encoded path with query."""
    sig = signature(secret=_secrets(secrets)[0], method=method, path=path, exp=exp, kid=kid)
    query = urlencode({"exp": exp, "kid": kid, "sig": sig})
    return f"{quote(path, safe=_PATH_SAFE)}?{query}"


def sign_url(
    *,
    base_url: str,
    path: str,
    exp: int,
    kid: int,
    method: str = "GET",
    secrets: Sequence[str] | None = None,
) -> str:
    return base_url.rstrip("/") + sign_path(
        path=path, exp=exp, kid=kid, method=method, secrets=secrets
    )


def _digits(value: str | None, name: str) -> int:
    """A decimal number as links spell it: ASCII digits, no sign, no leading zero (one number,
    one spelling, as a third party verifying a link reads it)."""
    if (
        value is None
        or not (value.isascii() and value.isdigit())
        or len(value) > _MAX_DIGITS
        or (value[0] == "0" and value != "0")
    ):
        raise LinkInvalid(
            Invalid.MALFORMED, f"This link is incomplete or damaged: '{name}' is not a number."
        )
    return int(value)


def verify(
    *,
    method: str,
    path: str,
    query: dict,
    now: float,
    secrets: Sequence[str] | None = None,
) -> SignedParams:
    """Check a request's signature and expiry; return (exp, kid) or raise LinkInvalid.

    ``path`` is the request's decoded path, ``query`` its parameters (one value each). The
    signature is checked before the expiry, so a tampered ``exp`` reads as tampering.
    """
    if method not in ("GET", "HEAD"):
        raise LinkInvalid(Invalid.MALFORMED, "Signed links answer GET and HEAD only.")
    exp = _digits(query.get("exp"), "exp")
    kid = _digits(query.get("kid"), "kid")
    sig = query.get("sig")
    if not sig or len(sig) != _SIG_LENGTH or not sig.isascii():
        raise LinkInvalid(Invalid.MALFORMED, "This link is incomplete or damaged: no signature.")
    presented = sig.encode("ascii")
    # Every secret is tried, without stopping at the first match: the time taken does not say
    # which secret (or whether any) matched.
    matched = False
    for secret in _secrets(secrets):
        expected = signature(secret=secret, method="GET", path=path, exp=exp, kid=kid)
        matched |= hmac.compare_digest(expected.encode("ascii"), presented)
    if not matched:
        raise LinkInvalid(
            Invalid.BAD_SIGNATURE,
            "The link's signature does not match: it was altered or was never issued here.",
        )
    if exp <= now:
        raise LinkInvalid(Invalid.EXPIRED, "This link has expired.")
    return SignedParams(exp=exp, kid=kid)


def verify_url(url: str, *, now: float, secrets: Sequence[str] | None = None) -> SignedParams:
    """Verify a whole signed URL as a third party would (tests, clients holding the secret)."""
    parts = urlsplit(url)
    query = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
    query = {name: unquote(value) for name, value in query.items()}
    return verify(method="GET", path=unquote(parts.path), query=query, now=now, secrets=secrets)
