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


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("https://svc.example/a", "http://svc.example/a"),  # down to plain http
        ("https://svc.example/a", "https://svc.example:8443/a"),  # another port
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:9000/a"),
        ("https://svc.example/a", "https://store.example/a"),  # another host
    ],
)
def test_the_token_is_dropped_on_a_redirect_off_the_origin(old, new):
    """What requests decides on a redirect, through courier's own session (which never adds
    credentials of its own): the token goes no further than its origin."""
    import requests

    from courier.client import _Session

    session = _Session()
    prepared = requests.Request("GET", new, headers={"Authorization": "Bearer t"}).prepare()
    previous = requests.Response()
    previous.request = requests.Request("GET", old).prepare()
    session.rebuild_auth(prepared, previous)
    assert "Authorization" not in prepared.headers


def test_the_token_stays_on_a_redirect_within_the_origin():
    import requests

    from courier.client import _Session

    prepared = requests.Request(
        "GET", "https://svc.example/b", headers={"Authorization": "Bearer t"}
    ).prepare()
    previous = requests.Response()
    previous.request = requests.Request("GET", "https://svc.example/a").prepare()
    _Session().rebuild_auth(prepared, previous)
    assert prepared.headers["Authorization"] == "Bearer t"


class _FailingFile:
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room, self.written = room, b""

    def write(self, data: bytes) -> int:
        if len(self.written) + len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.written += data
        return len(data)


@pytest.mark.parametrize("threaded", [False, True])
def test_a_sink_writes_and_hashes_every_piece_in_order(threaded):
    import hashlib

    from courier.download import _Sink

    pieces = [bytes([i]) * (1000 + i) for i in range(50)]
    out, digest = _FailingFile(room=10**9), hashlib.sha256()
    sink = _Sink(out, digest, threaded=threaded)
    for piece in pieces:
        sink.put(piece)
    sink.close()
    sink.close()  # a second close changes nothing
    assert out.written == b"".join(pieces)
    assert digest.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()


@pytest.mark.parametrize("threaded", [False, True])
def test_a_sink_that_cannot_write_says_so_to_the_reader(threaded):
    import hashlib

    from courier.download import _Sink

    sink = _Sink(_FailingFile(room=5000), hashlib.sha256(), threaded=threaded)
    with pytest.raises(OSError, match="No space"):
        for _ in range(100):  # the reader goes on until it hears, a few pieces at most
            sink.put(b"x" * 1000)
        sink.close()
    if threaded:  # the error stays the verdict: a later close raises it again
        with pytest.raises(OSError, match="No space"):
            sink.close()
