"""tokens/crypto.py on its own: the token format a client and a secret scanner see, the
checksum that rejects garbage without a query, re-derivable deploy tokens, the stored digest."""

import hashlib
import hmac
import re
import zlib

import pytest

from tokens import crypto

SHAPE = re.compile(r"ac([pbxd])_([0-9A-Za-z]{32})([0-9A-Za-z]{6})")


def base62_value(text: str) -> int:
    value = 0
    for ch in text:
        value = value * 62 + crypto.BASE62.index(ch)
    return value


@pytest.mark.parametrize("kind", ["project", "build", "derived", "deploy"])
def test_a_generated_token_has_the_documented_shape_and_checksum(kind):
    token = crypto.token_generate(kind)
    match = SHAPE.fullmatch(token)
    assert match is not None, token
    letter, entropy, checksum = match.groups()
    assert letter == crypto.KIND_LETTERS[kind]
    # The last six characters are the CRC32 of the randomness, in base62: recomputed here
    # independently of the module's own helper.
    assert base62_value(checksum) == zlib.crc32(entropy.encode())
    assert crypto.token_kind(token) == kind
    assert crypto.TOKEN_PATTERN.fullmatch(token)


def test_generated_tokens_differ():
    tokens = {crypto.token_generate("build") for _ in range(50)}
    assert len(tokens) == 50
    # Every position draws from the whole alphabet, not a fixed filler.
    entropies = [t[4:36] for t in tokens]
    assert len({e[0] for e in entropies}) > 10 and len({e[-1] for e in entropies}) > 10


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # checksum off by one character
        lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:],  # randomness changed
        lambda t: t[:-1],  # one character short
        lambda t: t + "A",  # one too many
        lambda t: "acq_" + t[4:],  # an unknown kind letter
        lambda t: t.replace("_", "-", 1),
        lambda t: "",
    ],
    ids=["checksum", "entropy", "short", "long", "kind", "separator", "empty"],
)
def test_a_mangled_token_is_refused_before_any_lookup(mangle):
    with pytest.raises(crypto.InvalidToken):
        crypto.token_kind(mangle(crypto.token_generate("build")))


def test_a_derived_token_is_the_hmac_of_kind_and_seed_and_nothing_else():
    token = crypto.token_derive("deploy", secret="pepper", seed="seed-1")
    assert token == crypto.token_derive("deploy", secret="pepper", seed="seed-1")
    assert crypto.token_kind(token) == "deploy"
    entropy = SHAPE.fullmatch(token).group(2)
    mac = hmac.new(b"pepper", b"deploy:seed-1", hashlib.sha256).digest()
    assert base62_value(entropy) == int.from_bytes(mac, "big") % 62**32
    others = {
        crypto.token_derive("deploy", secret="pepper", seed="seed-2"),
        crypto.token_derive("deploy", secret="other", seed="seed-1"),
        crypto.token_derive("build", secret="pepper", seed="seed-1")[4:],
    }
    assert token not in others and token[4:] not in others


def test_base62_pads_to_its_width():
    assert crypto._base62(0, 6) == "000000"
    assert crypto._base62(61, 3) == "00z"
    assert crypto._base62(62, 3) == "010"
    assert base62_value(crypto._base62(2**64 + 12345, 11)) == 2**64 + 12345


def test_only_the_keyed_digest_is_stored_and_it_verifies_in_constant_time():
    token = crypto.token_generate("build")
    digest = crypto.token_digest(token, pepper="pepper")
    assert digest == hmac.new(b"pepper", token.encode(), hashlib.sha256).hexdigest()
    assert token not in digest
    assert crypto.token_verify(token, digest, pepper="pepper")
    assert not crypto.token_verify(token, digest, pepper="another")
    assert not crypto.token_verify(crypto.token_generate("build"), digest, pepper="pepper")
