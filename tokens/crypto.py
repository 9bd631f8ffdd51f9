"""Token format, hashing and verification: pure functions, no database.

Format (GitHub's scheme): ``ac<kind letter>_`` + 32 base62 characters of randomness
(32 * log2(62) = 190 bits) + a 6-character base62 CRC32 of that randomness. The prefix makes a
leaked token recognisable to secret scanners; the checksum rejects typos and garbage before any
database query. Only ``HMAC-SHA256(pepper, token)`` is stored: a slow password hash buys nothing
for 190 random bits and would cost milliseconds on every request.
"""

import hashlib
import hmac
import re
import secrets
import zlib

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ENTROPY_LENGTH = 32
CHECKSUM_LENGTH = 6
# kind -> letter; "x" for derived keys (API.md shows status tokens as acx_...).
KIND_LETTERS = {"project": "p", "build": "b", "derived": "x", "deploy": "d"}
LETTER_KINDS = {letter: kind for kind, letter in KIND_LETTERS.items()}
TOKEN_LENGTH = 4 + ENTROPY_LENGTH + CHECKSUM_LENGTH
_TOKEN_RE = re.compile(
    rf"ac([pbxd])_([0-9A-Za-z]{{{ENTROPY_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
)
# Anything that looks like one of our tokens, for the logging redaction filter. No \b before
# it: a token glued to a word character ("/x" + token in a URL path) is still a token.
TOKEN_PATTERN = re.compile(r"ac[pbxd]_[0-9A-Za-z]{20,}")


class InvalidToken(ValueError):
    """The string cannot be one of our tokens (wrong shape, prefix or checksum)."""


def _base62(number: int, width: int) -> str:
    chars = []
    while number:
        number, rem = divmod(number, 62)
        chars.append(BASE62[rem])
    return "".join(reversed(chars)).rjust(width, "0")


def _checksum(entropy: str) -> str:
    return _base62(zlib.crc32(entropy.encode()), CHECKSUM_LENGTH)


def token_generate(kind: str) -> str:
    entropy = "".join(secrets.choice(BASE62) for _ in range(ENTROPY_LENGTH))
    return f"ac{KIND_LETTERS[kind]}_{entropy}{_checksum(entropy)}"


def token_derive(kind: str, *, secret: str, seed: str) -> str:
    """A token re-derivable from ``(secret, seed)``: used where the server must be able to hand
    out the same token again (the project's current deploy token) without storing it."""
    mac = hmac.new(secret.encode(), f"{kind}:{seed}".encode(), hashlib.sha256).digest()
    entropy = _base62(int.from_bytes(mac, "big"), ENTROPY_LENGTH)[-ENTROPY_LENGTH:]
    return f"ac{KIND_LETTERS[kind]}_{entropy}{_checksum(entropy)}"


def token_kind(token: str) -> str:
    """Return the kind a well-formed token claims, or raise InvalidToken. No I/O."""
    match = _TOKEN_RE.fullmatch(token) if len(token) == TOKEN_LENGTH else None
    if match is None:
        raise InvalidToken("malformed token")
    letter, entropy, checksum = match.groups()
    if not hmac.compare_digest(checksum, _checksum(entropy)):
        raise InvalidToken("bad token checksum")
    return LETTER_KINDS[letter]


def token_digest(token: str, *, pepper: str) -> str:
    return hmac.new(pepper.encode(), token.encode(), hashlib.sha256).hexdigest()


def token_verify(token: str, digest: str, *, pepper: str) -> bool:
    return hmac.compare_digest(token_digest(token, pepper=pepper), digest)
