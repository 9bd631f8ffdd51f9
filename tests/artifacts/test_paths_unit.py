"""artifacts/paths.py on its own: each rule of the path policy refuses what it should and
nothing a build legitimately writes (one rule per case, so losing any one fails here)."""

import pytest

from artifacts.errors import InvalidArtifactPath
from artifacts.paths import artifact_path_clean, artifact_prefix_clean


@pytest.mark.parametrize(
    "path",
    [
        "a",
        "dist/app.tar.gz",
        "caf\u00e9/r\u00e9sum\u00e9.pdf",  # NFC
        "a b/c-d_e.f~g+h@i",
        "x" * 255,
        "/".join(["y" * 200] * 5),  # 1004 characters
    ],
    ids=["one-char", "nested", "nfc-accents", "punctuation", "longest-segment", "long-path"],
)
def test_paths_a_build_writes_are_accepted_unchanged(path):
    assert artifact_path_clean(path) == path


REFUSED = {
    "empty": "",
    "absolute": "/etc/passwd",
    "trailing-slash": "dist/",
    "empty-segment": "a//b",
    "dot-first": "./a",
    "dot-inside": "a/./b",
    "dotdot-first": "../a",
    "dotdot-inside": "a/../b",
    "dotdot-last": "a/..",
    "backslash": "a\\b",
    "nul": "a\x00b",
    "newline": "a\nb",
    "del": "a\x7fb",
    "zero-width-space": "a\u200bb",
    "line-separator": "a\u2028b",
    "nfd": "cafe\u0301.txt",  # two spellings of one name
    "segment-too-long": "x" * 256,
    "path-too-long": "/".join(["y" * 200] * 6),
}


@pytest.mark.parametrize("path", REFUSED.values(), ids=REFUSED.keys())
def test_paths_no_upload_may_have_are_refused(path):
    with pytest.raises(InvalidArtifactPath):
        artifact_path_clean(path)


def test_the_nfc_rule_is_what_refuses_a_decomposed_name():
    with pytest.raises(InvalidArtifactPath, match="normal form C"):
        artifact_path_clean("cafe\u0301.txt")


@pytest.mark.parametrize("prefix", ["", "dist", "dist/", "d"])
def test_listing_prefixes_are_any_start_of_a_path(prefix):
    assert artifact_prefix_clean(prefix) == prefix


@pytest.mark.parametrize("prefix", ["a\x00", "\n", "a\u200b"], ids=["nul", "newline", "zwsp"])
def test_listing_prefixes_with_control_characters_are_refused(prefix):
    with pytest.raises(InvalidArtifactPath):
        artifact_prefix_clean(prefix)
