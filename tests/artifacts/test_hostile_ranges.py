"""Range headers with absurd numbers (RFC 9110 §14.1.1 puts no bound on 1*DIGIT) are answered
as the numbers mean, never a 500: past the end is 416, a suffix or end past the end is clamped."""

import pytest

from .conftest import download, upload

pytestmark = pytest.mark.django_db

MANY = "9" * 5000  # more digits than int() converts (sys.get_int_max_str_digits)


@pytest.fixture
def ten_bytes(api, build):
    upload(api, build.token, build.build.pk, "ten.bin", b"0123456789")
    return lambda **headers: download(api, build.token, build.build.pk, "ten.bin", headers=headers)


@pytest.mark.parametrize(
    "header",
    [f"bytes={MANY}-", f"bytes={MANY}-{MANY}", "bytes=99999999999999999999-"],
    ids=["start", "start-end", "start-20-digits"],
)
def test_a_range_starting_past_any_file_is_416(ten_bytes, header):
    got = ten_bytes(Range=header)
    assert got.status_code == 416
    assert got["Content-Range"] == "bytes */10"


@pytest.mark.parametrize(
    "header, content_range, body",
    [
        (f"bytes=-{MANY}", "bytes 0-9/10", b"0123456789"),
        (f"bytes=0-{MANY}", "bytes 0-9/10", b"0123456789"),
        (f"bytes=7-{MANY}", "bytes 7-9/10", b"789"),
        (f"bytes={'0' * 5000}2-{'0' * 5000}4", "bytes 2-4/10", b"234"),
    ],
    ids=["suffix", "end", "start-and-end", "leading-zeros"],
)
def test_a_range_ending_past_the_file_is_clamped(ten_bytes, header, content_range, body):
    got = ten_bytes(Range=header)
    assert got.status_code == 206
    assert got["Content-Range"] == content_range
    assert got.body == body


@pytest.mark.parametrize("header", ["bytes=²-", "bytes=-²", "bytes=0-٣"])
def test_digits_of_other_scripts_are_not_a_range(ten_bytes, header):
    got = ten_bytes(Range=header)
    assert got.status_code == 200
    assert got.body == b"0123456789"
