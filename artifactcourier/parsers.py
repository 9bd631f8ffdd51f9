"""JSON in and out of the API: the one parser every JSON endpoint uses, and the renderer.

The parser decides once what JSON input the service accepts, so no endpoint meets input that
its validation, the database or the response cannot handle:

- nested at most ``JSON_MAX_DEPTH`` arrays/objects deep (400 ``json_too_deep``): deeper input
  would exhaust the stack of the parser and of every recursive walk after it;
- every string and key encodable as UTF-8 (400 ``invalid_unicode``): JSON's ``\\ud800`` escape
  decodes to a lone surrogate, which no response, log line or PostgreSQL column can hold
  (RFC 8259 §8.2 leaves such text's behaviour unpredictable; we refuse it).
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from rest_framework import exceptions
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer


class JsonTooDeep(exceptions.ParseError):
    default_code = "json_too_deep"


class InvalidUnicode(exceptions.ParseError):
    default_code = "invalid_unicode"


def _pointer(path: tuple) -> str:
    """``path`` as a JSON Pointer (RFC 6901), printable whatever the keys hold."""
    parts = (str(p).replace("~", "~0").replace("/", "~1") for p in path)
    text = "/" + "/".join(parts) if path else "/"
    return text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_value_check(value, *, max_depth: int | None = None) -> None:
    """Raise if ``value`` (decoded JSON) is nested deeper than ``max_depth`` or holds text that
    cannot be encoded. Iterative, so it is safe on any input."""
    max_depth = settings.JSON_MAX_DEPTH if max_depth is None else max_depth
    stack = [(value, 0, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                raise InvalidUnicode(
                    f"The JSON text at {_pointer(path)} holds a lone surrogate "
                    "(an escape such as \\ud800 that encodes no character)."
                )
            continue
        if isinstance(item, dict | list):
            if depth >= max_depth:
                raise JsonTooDeep(f"JSON may nest arrays and objects at most {max_depth} deep.")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not _encodable(key):
                        raise InvalidUnicode(
                            f"A JSON object key at {_pointer(path)} holds a lone surrogate "
                            "(an escape such as \\ud800 that encodes no character)."
                        )
                    stack.append((child, depth + 1, (*path, key)))
            else:
                stack.extend((child, depth + 1, (*path, i)) for i, child in enumerate(item))


def validate_json_value(value) -> None:
    """``json_value_check`` as a Django validator, for JSON that arrives other than through the
    API (a model field edited in the admin)."""
    try:
        json_value_check(value)
    except exceptions.ParseError as error:
        raise ValidationError(str(error.detail), code=error.default_code) from None


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, bounded in depth, refusing unencodable text (see above)."""

    def parse(self, stream, media_type=None, parser_context=None):
        # The body's size is bounded before this by DATA_UPLOAD_MAX_MEMORY_SIZE (request.body).
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            # CPython's decoder stops at the interpreter's recursion limit, cleanly.
            raise JsonTooDeep(
                f"JSON may nest arrays and objects at most {settings.JSON_MAX_DEPTH} deep."
            ) from None
        json_value_check(data)
        return data


class SafeJSONRenderer(JSONRenderer):
    """DRF's JSON renderer, which never fails to encode: text that UTF-8 cannot hold (a lone
    surrogate from older rows, or echoed in an error message) is written as a JSON escape."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            self.ensure_ascii = True
            try:
                return super().render(data, accepted_media_type, renderer_context)
            finally:
                del self.ensure_ascii
