"""The path policy of `courier download`, as a unit: what a listing may name on the file
system courier runs on. Windows' own rules are checked with ``windows=True`` (the default
is the running platform's)."""

import pytest

from courier.client import CourierError
from courier.download import safe_relative

WINDOWS_UNSAFE = [
    "CON",
    "con.txt",  # a device whatever the extension (before Windows 11)
    "dist/NUL",
    "aux/readme.md",
    "COM1.log",
    "lpt9",
    "COM¹",  # superscript digits name devices too
    "CONIN$",
    "conout$.txt",
    "CON .txt",  # blanks before the extension are dropped
    "trailing.",  # Windows drops trailing dots and blanks: another name than listed
    "trailing ",
    "dir./a.txt",
    "...",
    "a.txt:stream",  # an alternate data stream of a.txt
    "dir/x:y",
    'quote".txt',
    "pipe|.txt",
    "star*.txt",
    "what?.txt",
    "less<.txt",
    "more>.txt",
]
WINDOWS_FINE = ["console.txt", "conf/a.txt", "nul1", "com10", "lpt", "a.b.c", "dist/app.exe"]


@pytest.mark.parametrize("path", WINDOWS_UNSAFE)
def test_a_name_windows_cannot_write_as_listed_is_refused_there(path):
    with pytest.raises(CourierError):
        safe_relative(path, windows=True)


@pytest.mark.parametrize("path", WINDOWS_UNSAFE)
def test_the_same_names_are_ordinary_elsewhere(path):
    assert safe_relative(path, windows=False) == path


@pytest.mark.parametrize("path", WINDOWS_FINE)
def test_names_that_only_look_like_devices_are_fine_on_windows(path):
    assert safe_relative(path, windows=True) == path
