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


# name -> (path, what the reason must say): each case is refused by the rule it names, so a
# rule lost behind another one (a leading "/" also makes an empty segment) still fails here.
REFUSED = {
    "empty": ("", "empty"),
    "absolute": ("/etc/passwd", "relative"),
    "trailing-slash": ("dist/", "name a file"),
    "empty-segment": ("a//b", "empty segment"),
    "dot-first": ("./a", "'.' segment"),
    "dot-inside": ("a/./b", "'.' segment"),
    "dotdot-first": ("../a", "'..' segment"),
    "dotdot-inside": ("a/../b", "'..' segment"),
    "dotdot-last": ("a/..", "'..' segment"),
    "backslash": ("a\\b", "backslash"),
    "nul": ("a\x00b", "U+0000"),
    "newline": ("a\nb", "U+000A"),
    "del": ("a\x7fb", "U+007F"),
    "zero-width-space": ("a\u200bb", "U+200B"),
    "line-separator": ("a\u2028b", "U+2028"),
    "nfd": ("cafe\u0301.txt", "normal form C"),  # two spellings of one name
    "segment-too-long": ("x" * 256, "segment"),
    "path-too-long": ("/".join(["y" * 200] * 6), "longer than"),
}


@pytest.mark.parametrize(("path", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_paths_no_upload_may_have_are_refused_by_their_rule(path, reason):
    with pytest.raises(InvalidArtifactPath) as refused:
        artifact_path_clean(path)
    assert reason in str(refused.value.detail)
    assert str(refused.value.detail)[0].isupper()  # a sentence, as the API shows it


def test_the_nfc_rule_is_what_refuses_a_decomposed_name():
    with pytest.raises(InvalidArtifactPath, match="normal form C"):
        artifact_path_clean("cafe\u0301.txt")


@pytest.mark.parametrize("prefix", ["", "dist", "dist/", "d"])
def test_listing_prefixes_are_any_start_of_a_path(prefix):
    assert artifact_prefix_clean(prefix) == prefix


@pytest.mark.parametrize("prefix", ["a\x00", "\n", "a\u200b"], ids=["nul", "newline", "zwsp"])
def test_listing_prefixes_with_control_characters_are_refused(prefix):
    with pytest.raises(InvalidArtifactPath) as refused:
        artifact_prefix_clean(prefix)
    assert refused.value.get_codes() == "invalid_prefix"
    assert "control character" in str(refused.value.detail)


def test_a_path_or_prefix_of_exactly_the_maximum_length_is_accepted(settings):
    settings.ARTIFACT_PATH_MAX_LENGTH = 12
    assert artifact_path_clean("a" * 12) == "a" * 12
    assert artifact_prefix_clean("a" * 12) == "a" * 12


def test_a_path_over_the_maximum_length_says_so(settings):
    settings.ARTIFACT_PATH_MAX_LENGTH = 12
    with pytest.raises(InvalidArtifactPath) as refused:
        artifact_path_clean("a" * 13)
    assert str(refused.value.detail) == "The artifact path is longer than 12 characters."
    assert refused.value.get_codes() == "invalid_path"


def test_a_prefix_over_the_maximum_length_says_so(settings):
    settings.ARTIFACT_PATH_MAX_LENGTH = 12
    with pytest.raises(InvalidArtifactPath) as refused:
        artifact_prefix_clean("a" * 13)
    assert str(refused.value.detail) == "The prefix is longer than 12 characters."
    assert refused.value.get_codes() == "invalid_prefix"
