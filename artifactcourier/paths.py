"""The artifact path policy: which strings may name an artifact, or start one (a prefix).

One pure function, no Django app imported, so every layer that accepts a path or a prefix asks
the same question: artifact uploads and downloads and ``?prefix=`` (``artifacts.paths``), a
derived key's or a share's ``path_prefix`` (``tokens.access``). docs/api.md, "Artifact paths",
states the policy for users.

Paths are names people read and hand to other tools, so two paths that look alike must not
name two artifacts: no invisible or blank-looking characters, one Unicode normal form, no
segment that Windows or a shell would silently change (a trailing dot or space).
"""

import re
import unicodedata

from django.conf import settings

# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15.1): characters
# that render as nothing, some of them letters (U+3164 HANGUL FILLER, category Lo), so
# str.isprintable() lets them through.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


# Django keeps bytes of a request path that are not UTF-8 as literal "%XX" text (and a query
# string's as U+FFFD): either in a path means the client's bytes were not UTF-8, or the path
# would read as a percent-encoded one ("a%41" next to "aA").
_PERCENT_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")


_DEFAULT_IGNORABLE_CHARS = re.compile(
    "[" + "".join(f"{chr(low)}-{chr(high)}" for low, high in _DEFAULT_IGNORABLE) + "]"
)


def _default_ignorable(char: str) -> bool:
    return _DEFAULT_IGNORABLE_CHARS.match(char) is not None


def _character_problem(char: str) -> str | None:
    name = f"U+{ord(char):04X}"
    if char == "\\":
        return "contains a backslash; use '/'"
    if char == " ":
        return None
    if char == "\ufffd":
        return "contains U+FFFD, the mark of bytes that were not valid UTF-8"
    category = unicodedata.category(char)
    if category == "Co":
        return f"contains a private-use character ({name})"
    if category == "Cn":
        return f"contains an unassigned code point or noncharacter ({name})"
    # Not printable: control and format characters, surrogates, separators other than the
    # space (NBSP U+00A0, the line separator U+2028, ...).
    if not char.isprintable() or _default_ignorable(char):
        return f"contains an invisible or control character ({name})"
    return None


def _segment_problem(segment: str, *, partial: bool) -> str | None:
    """What is wrong with one segment; ``partial``: the unfinished end of a prefix, which may
    still end anywhere (``app.`` starts ``app.tar``)."""
    if segment == "" and not partial:
        return "contains an empty segment ('//')"
    if segment in {".", ".."} and not partial:
        return f"contains a '{segment}' segment"
    if len(segment) > settings.ARTIFACT_PATH_SEGMENT_MAX_LENGTH:
        return f"has a segment longer than {settings.ARTIFACT_PATH_SEGMENT_MAX_LENGTH} characters"
    if segment and unicodedata.category(segment[0]).startswith("M"):
        return f"has a segment starting with a combining mark (U+{ord(segment[0]):04X})"
    if segment.startswith(" "):
        return "has a segment starting with a space"
    if not partial and segment.endswith((".", " ")):
        return "has a segment ending in a dot or a space"
    return None


def path_problem(path: str, *, prefix: bool = False) -> str | None:
    """Why ``path`` cannot name an artifact (a phrase: "contains a backslash; use '/'"), or
    None if it can. With ``prefix``, the string need only start one: its last segment may be
    unfinished (empty, or ending in a dot), and the empty prefix is fine."""
    if not path:
        return None if prefix else "is empty"
    if not (path.isascii() and path.isprintable()) or "\\" in path:  # else nothing to find
        for char in path:
            if problem := _character_problem(char):
                return problem
    if match := _PERCENT_ENCODED.search(path):
        return (
            f"contains '{match.group()}', a percent-encoded byte (not valid UTF-8, or "
            "encoded twice)"
        )
    if unicodedata.normalize("NFC", path) != path:
        return "is not in Unicode normal form C (NFC)"
    if path.startswith("/"):
        return "must be relative (no leading '/')"
    if not prefix and path.endswith("/"):
        return "must name a file (no trailing '/')"
    *segments, last = path.split("/")
    for segment in segments:
        if problem := _segment_problem(segment, partial=False):
            return problem
    return _segment_problem(last, partial=prefix)
