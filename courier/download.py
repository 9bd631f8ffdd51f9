"""`courier download`: a build's artifacts (with a key) or a pre-signed link (no key).

The server is not trusted with the local file system: every path it names is checked to stay
inside the target directory before anything is written, a file is written to a temporary
name beside its target and only renamed into place once its SHA-256 matches the digest the
server announced, and a cut transfer resumes where it stopped (RFC 9110 §14 ranges, with
If-Range so that a changed file is sent whole)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import stat
import tempfile
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

import requests

from . import pace
from .client import (
    EXIT_FAILURE,
    Client,
    CourierError,
    ListingBudget,
    backoff,
    check_url,
    printable,
    read_json,
    same_origin,
)
from .output import Reporter, human_size

CHUNK = 1024 * 1024
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
PART_SUFFIX = ".courier-part"
# The process's umask, read once (setting it is the only way to read it): a partial file
# is created 0600 and gets the mode an ordinary new file would before it is used.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@dataclass
class Remote:
    path: str  # relative path under the target directory
    url: str
    sha256: str | None = None
    size: int | None = None
    auth: bool = False  # send the bearer token (only to the service's own API)


@dataclass
class Outcome:
    path: str
    status: str  # downloaded, unchanged, failed
    size: int = 0
    sha256: str = ""
    error: str = ""
    resumed_from: int = 0
    exit_code: int = EXIT_FAILURE  # of a failure: 3 refused, 4 not found, 1 anything else

    def as_dict(self) -> dict:
        data = {"path": self.path, "status": self.status, "size": self.size}
        for key in ("sha256", "error", "resumed_from"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        return data


ON_WINDOWS = os.name == "nt"
# Names Windows gives to devices, whatever follows a dot (before Windows 11) and with the
# blanks before it dropped: `NUL.txt` opens the null device, `CON` the console.
_WINDOWS_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³]|CONIN\$|CONOUT\$)", re.I)
# Not in a Windows name: `:` names a file's alternate data stream (`a.txt:x` writes into
# a.txt) or a drive, the others are wildcards and redirections.
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')


def _windows_unsafe(part: str) -> bool:
    """A name Windows would not write as listed: a device, a name it changes (trailing dots
    and blanks are dropped: another file than the listing's), a forbidden character."""
    return (
        bool(_WINDOWS_DEVICE.fullmatch(part.split(".", 1)[0].rstrip(" ")))
        or part.endswith((".", " "))
        or not _WINDOWS_FORBIDDEN.isdisjoint(part)
    )


def safe_relative(path: object, *, windows: bool = ON_WINDOWS) -> str:
    """A server-given path as a relative POSIX path, or an error: nothing absolute, no
    `..`, no empty or `.` segment, no NUL or control character, no backslash (a separator
    on Windows); on Windows (``windows``), no name it would not write as listed."""
    if not isinstance(path, str) or not path:
        raise CourierError(f"refusing a path from the server: {printable(repr(path))}")
    parts = path.split("/")
    bad = (
        path.startswith("/")
        or "\\" in path
        or any(not ch.isprintable() and ch != " " for ch in path)
        or any(part in ("", ".", "..") for part in parts)
        or re.match(r"^[A-Za-z]:", path)
    )
    if bad:
        raise CourierError(f"refusing a path that could leave the target: {printable(path)}")
    if windows and any(_windows_unsafe(part) for part in parts):
        raise CourierError(f"refusing a name Windows cannot write as listed: {printable(path)}")
    return path


def target_for(root: Path, rel: str) -> Path:
    """Where ``rel`` goes under ``root``, creating its directories one at a time; refuses a
    symlink anywhere on the way (one already in the tree could lead outside ``root``) and
    anything but a regular file at the end."""
    rel = safe_relative(rel)
    parts = PurePosixPath(rel).parts
    if parts[-1].endswith(PART_SUFFIX):
        raise CourierError(f"refusing a name courier uses for partial files: {printable(rel)}")
    current = root.resolve()
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise CourierError(f"refusing a path through a symlink: {printable(rel)}")
        if not current.exists():
            current.mkdir(exist_ok=True)
        elif not current.is_dir():
            raise CourierError(f"refusing a path through a non-directory: {printable(rel)}")
    target = current / parts[-1]
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise CourierError(f"refusing to replace a non-file: {printable(rel)}")
    return target


def announced_digest(response: requests.Response) -> str | None:
    """The SHA-256 announced with the bytes: `X-Checksum-Sha256`, from the first answer that
    has one: the link's own (the service's, on a redirect to the object store, whose answer
    has none). Whatever answers later on the way must agree: an object store reached over
    plain http, or anyone on its way, cannot vouch for bytes of its own."""
    found = None
    for r in [*response.history, response]:
        value = r.headers.get("X-Checksum-Sha256", "").strip().lower()
        if value and found is None:
            found = value
        elif value and value != found:
            raise CourierError("a digest announced after a redirect disagrees with the link's")
    return found


def _file_digest(path: Path, limit: int | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        left = limit
        while True:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()


class Downloader:
    def __init__(self, client: Client, root: Path, reporter: Reporter) -> None:
        self.client, self.root, self.reporter = client, root, reporter

    def fetch(self, remote: Remote) -> Outcome:
        try:
            return self._fetch(remote)
        except (CourierError, OSError) as exc:
            error = str(exc) if isinstance(exc, CourierError) else _os_error(exc)
            code = exc.exit_code if isinstance(exc, CourierError) else EXIT_FAILURE
            self.reporter.line(f"FAILED {remote.path}: {error}")
            return Outcome(remote.path, "failed", error=error, exit_code=code)

    def _fetch(self, remote: Remote) -> Outcome:
        target = target_for(self.root, remote.path)
        if remote.sha256 and target.is_file() and _matches(target, remote):
            self.reporter.line(f"unchanged {remote.path} (already here, same digest)")
            return Outcome(remote.path, "unchanged", target.stat().st_size, remote.sha256)
        # The partial file a cut run left (`.NAME.courier-part`) is claimed by renaming it to
        # a name of this run's own: two runs into one directory never write the same file,
        # and what this run renames into place is what it verified.
        parked = target.with_name(f".{target.name}{PART_SUFFIX}")
        part = _claim(parked, target)
        handle = self.reporter.start(remote.path, remote.size)
        resumed_from = 0
        attempt = 0
        done = False
        try:
            while True:
                try:
                    digest, size, offset = self._transfer(remote, part, handle)
                    resumed_from = max(resumed_from, offset)
                    break
                except _Retry as exc:
                    if attempt >= self.client.config.retries:
                        self.reporter.finish(handle, None)  # fetch() says FAILED
                        raise CourierError(str(exc)) from None
                    attempt += 1
                    time.sleep(backoff(attempt))
                except (CourierError, OSError):
                    self.reporter.finish(handle, None)
                    raise
            os.replace(part, target)
            done = True
        finally:
            if not done:
                _park(part, parked)
        note = f", resumed at {resumed_from} bytes" if resumed_from else ""
        self.reporter.finish(
            handle, f"downloaded {remote.path} ({human_size(size)}, sha256 verified{note})"
        )
        return Outcome(remote.path, "downloaded", size, digest, resumed_from=resumed_from)

    def _transfer(self, remote: Remote, part: Path, handle: object) -> tuple[str, int, int]:
        """One GET; returns the digest, the size and where the server resumed (0: from the
        start). Raises _Retry for a transfer worth resuming, CourierError for a verdict."""
        offset = part.lstat().st_size
        headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
        # What the part holds is hashed before asking: an answer is read as it comes (one
        # left waiting while a large part is hashed would count as stalled).
        held = hashlib.sha256()
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if remote.sha256:
                headers["If-Range"] = f'"{remote.sha256}"'
            with _open_part(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    held.update(chunk)
        response = self.client.request(
            "GET",
            remote.url,
            auth=remote.auth,
            headers=headers,
            expect=(200, 206, 416),
        )
        with response:
            announced = announced_digest(response)
            expected = remote.sha256 or announced
            if remote.sha256 and announced and announced != remote.sha256:
                raise CourierError("the server's digest header disagrees with its listing")
            if not expected or not SHA256_HEX.match(expected):
                raise CourierError("the server sent no SHA-256 to verify the file against")
            if response.status_code == 416:
                # The part already holds at least the whole file: check it as it is.
                mode = None
            elif response.status_code == 206:
                start = _content_range_start(response.headers.get("Content-Range", ""))
                if start != offset:
                    raise CourierError("the server answered another range than asked for")
                mode = "ab"
            else:
                offset = 0
                mode = "wb"
            self.reporter.reset(handle, offset)
            digest = hashlib.sha256() if mode == "wb" else held
            size = offset
            if mode is not None:
                with _open_part(part, mode) as out:
                    sink = _Sink(out, digest, threaded=remote.size is None or remote.size >= HEAVY)
                    body = (
                        pace.iter_body_into(response, sink.buffers, CHUNK)
                        if sink.buffers is not None
                        else pace.iter_body(response, CHUNK)
                    )
                    try:
                        for chunk in body:
                            if remote.size is not None and size + len(chunk) > remote.size:
                                # Never more than announced on disk: an endless body stops.
                                sink.close()
                                part.unlink(missing_ok=True)
                                raise CourierError(
                                    f"the server sent more bytes than the {remote.size}"
                                    " the listing announced; the file was not kept"
                                )
                            sink.put(chunk)
                            size += len(chunk)
                            self.reporter.advance(handle, len(chunk))
                    except requests.RequestException as exc:
                        if pace.stalled():
                            reason = f"the transfer {pace.reason()}"
                        elif isinstance(exc, requests.Timeout):
                            reason = "the transfer stalled"
                        else:
                            reason = "the connection broke during the transfer"
                        raise _Retry(reason) from None
                    finally:
                        sink.close()  # every piece received is written (or the error raised)
                length = response.headers.get("Content-Length")
                short = length and length.isdigit() and size - offset < int(length)
                if short and not pace.content_coded(response):
                    raise _Retry("the connection closed before the end of the file")
        actual = digest.hexdigest()
        if actual != expected:
            part.unlink(missing_ok=True)
            raise CourierError(
                f"SHA-256 mismatch: expected {expected}, got {actual}; the file was not kept"
            )
        return actual, size, offset if mode == "ab" else 0


class _Retry(Exception):
    pass


class _Sink:
    """Writes and hashes a transfer's pieces. ``threaded``: on a thread of its own, while the
    next piece is received, so that receiving, hashing and writing a large file overlap instead
    of taking turns (at most _SINK_PIECES pieces wait in between). Threaded, it also lends
    ``buffers`` to receive into (pace.iter_body_into): a piece that is a view of one goes back
    to them once written, so that a large file costs no new memory per piece (fresh memory
    is pages the kernel must map and clear, each MiB of the file again). ``close()`` waits
    for the pieces sent, and raises what writing them raised; it may be called more than
    once."""

    def __init__(self, out, digest, *, threaded: bool) -> None:
        self.out, self.digest = out, digest
        self.error: BaseException | None = None
        self.thread = None
        self.buffers: queue.Queue[bytearray] | None = None
        if threaded:
            # One per piece that can wait, one being written, one being received.
            self.buffers = _Buffers(_SINK_PIECES + 2, CHUNK)
            self.queue: queue.Queue = queue.Queue(maxsize=_SINK_PIECES)
            self.thread = threading.Thread(target=self._run, name="courier-sink", daemon=True)
            self.thread.start()

    def put(self, chunk: bytes) -> None:
        if self.thread is None:
            self.out.write(chunk)
            self.digest.update(chunk)
            return
        if self.error is not None:
            raise self.error
        self.queue.put(chunk)

    def close(self) -> None:
        if self.thread is not None:
            if self.thread.is_alive():
                self.queue.put(None)
                self.thread.join()
            if self.error is not None:
                raise self.error

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.out.write(chunk)
                    self.digest.update(chunk)
                except BaseException as exc:  # a full disk: raised to the reader
                    self.error = exc
            if isinstance(chunk, memoryview):
                self.buffers.put(chunk.obj)


class _Buffers(queue.Queue):
    """Up to ``limit`` buffers of ``size`` bytes, each made when none is free: a transfer
    that needs one (a small file, a slow link) costs one, not the whole pool (a new buffer
    is zeroed: resident memory, whatever the file's size)."""

    def __init__(self, limit: int, size: int) -> None:
        super().__init__()
        self.left, self.size = limit, size

    def get(self, block: bool = True, timeout: float | None = None) -> bytearray:
        with self.mutex:
            make = not self._qsize() and self.left > 0
            self.left -= make
        return bytearray(self.size) if make else super().get(block, timeout)


# Pieces (of up to CHUNK bytes) received and not yet written, per transfer.
_SINK_PIECES = 4


def _os_error(exc: OSError) -> str:
    """An OSError in one sentence, without the paths it names (they can be long and come
    from the server; the line already names the artifact)."""
    return f"cannot write the file: {exc.strerror or type(exc).__name__}"


def _claim(parked: Path, target: Path) -> Path:
    """A fresh partial file of this run's own (created exclusively: never an existing file
    or symlink), holding the bytes a previous run parked, if any."""
    try:
        info = parked.lstat()
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise CourierError(f"refusing a partial file that is not a regular file: {parked.name}")
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=PART_SUFFIX, dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
    finally:
        os.close(fd)
    part = Path(name)
    if info is not None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(parked, part)  # atomic: of two runs, one gets it
        if not stat.S_ISREG(part.lstat().st_mode):
            part.unlink()
            raise CourierError(f"refusing a partial file that is not a regular file: {parked.name}")
    return part


def _park(part: Path, parked: Path) -> None:
    """Leave what was fetched for the next run to resume from (nothing if empty)."""
    try:
        if part.lstat().st_size and stat.S_ISREG(part.lstat().st_mode):
            os.replace(part, parked)
        else:
            part.unlink()
    except OSError:
        pass


def _open_part(part: Path, mode: str):
    """The partial file, never through a symlink. Opened to be written whole ("wb"), it is
    emptied only if it holds bytes: on ext4, truncating a file (even an empty one) marks it
    to have its blocks allocated and written back when it is closed, a close() that blocks
    for a fraction of a second per 100 MiB (auto_da_alloc); a fresh part has nothing to cut."""
    flags = {
        "rb": os.O_RDONLY,
        "ab": os.O_WRONLY | os.O_APPEND,
        "wb": os.O_WRONLY,
    }[mode]
    fd = os.open(part, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    try:
        if mode == "wb" and os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, mode)


def _matches(target: Path, remote: Remote) -> bool:
    if remote.size is not None and target.stat().st_size != remote.size:
        return False
    return _file_digest(target) == remote.sha256


def _content_range_start(value: str) -> int | None:
    match = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", value)
    return int(match.group(1)) if match else None


def remotes_from_listing(artifacts: object, *, make_url) -> list[Remote]:
    """Validate a listing (from the API or a share link) before anything is written."""
    if not isinstance(artifacts, list):
        raise CourierError("the server answered a listing in an unexpected shape")
    remotes, seen = [], {}
    for item in artifacts:
        if not isinstance(item, dict):
            raise CourierError("the server answered a listing in an unexpected shape")
        path = safe_relative(item.get("path"))
        sha = item.get("sha256")
        if not isinstance(sha, str) or not SHA256_HEX.match(sha):
            raise CourierError(f"the listing has no valid SHA-256 for {printable(path)}")
        key = _fold(path)
        if key in seen:
            raise CourierError(
                f"the listing names {printable(path)} twice"
                + ("" if seen[key] == path else f" (as {printable(seen[key])})")
            )
        seen[key] = path
        size = item.get("size")
        url = make_url(item)
        remotes.append(
            Remote(path, url, sha, size if isinstance(size, int) and size >= 0 else None)
        )
    # A file and a directory of the same name cannot both be written.
    for key in seen:
        parent = key.rsplit("/", 1)[0] if "/" in key else None
        while parent:
            if parent in seen:
                raise CourierError(
                    f"the listing names {printable(seen[parent])} as file and folder"
                )
            parent = parent.rsplit("/", 1)[0] if "/" in parent else None
    return remotes


def _fold(path: str) -> str:
    """The name a path has on the file systems CI runs on, where names differing only in
    case (macOS, Windows), Unicode normalisation (NFC/NFD on macOS) or trailing dots and
    blanks (Windows) are one file: two such paths in a listing would overwrite each other."""
    folded = unicodedata.normalize("NFC", unicodedata.normalize("NFC", path).casefold())
    return "/".join(part.rstrip(". ") or part for part in folded.split("/"))


def build_remotes(client: Client, build: str, prefix: str | None) -> list[Remote]:
    params = {"page_size": 1000, **({"prefix": prefix} if prefix else {})}
    items = list(client.paginate(f"api/v1/builds/{quote(build)}/artifacts/", params))

    def url(item):
        return f"api/v1/builds/{quote(build)}/artifacts/{quote(item['path'], safe='/')}"

    remotes = remotes_from_listing(items, make_url=url)
    for remote in remotes:
        remote.auth = True
    return remotes


def link_remotes(client: Client, link: str) -> list[Remote]:
    """A pre-signed link: a share listing (JSON with its artifacts, each with its own link,
    in pages joined by ``next``) or a single file. No token is sent; the link is the
    credential."""
    parts = urlsplit(check_url(link, "the link"))
    response = client.request("GET", link, auth=False, headers={"Accept": "application/json"})
    with response:
        if announced_digest(response) is None and "json" in response.headers.get(
            "Content-Type", ""
        ):
            budget = ListingBudget()
            budget.page(link)
            listing = read_json(response, budget)
            if not isinstance(listing, dict):
                raise CourierError("the link answered neither a file nor a listing")

            def url(item):
                value = item.get("url")
                # A listing's links are the service's own (/dl/ on its origin; a redirect to
                # the object store comes from there): a link elsewhere would make this job
                # fetch whatever the listing names, e.g. an address only it can reach.
                if not isinstance(value, str) or not same_origin(value, link):
                    path = printable(str(item.get("path")))
                    raise CourierError(f"refusing a link off the listing's origin for {path}")
                return value

            pages = client.paginate(
                link,
                items="artifacts",
                first_page=listing,
                budget=budget,
                auth=False,
                headers={"Accept": "application/json"},
            )
            return remotes_from_listing(list(pages), make_url=url)
    name = unquote(PurePosixPath(parts.path).name) or "download"
    return [Remote(safe_relative(name), link)]


def download(
    *, client: Client, remotes: list[Remote], root: Path, jobs: int, reporter: Reporter
) -> list[Outcome]:
    try:
        root.mkdir(parents=True, exist_ok=True)
        for remote in remotes:  # every path checked before the first byte is written
            target_for(root, remote.path)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CourierError(f"cannot create the files under {printable(root)}: {reason}") from None
    reporter.begin(len(remotes), sum(r.size or 0 for r in remotes))
    downloader = Downloader(client, root, reporter)
    heavy = [r.size is not None and r.size >= HEAVY for r in remotes]
    light_jobs, heavy_jobs = _pool_sizes(jobs, heavy)
    # Large files go to a pool no larger than the CPUs: each of their bytes is hashed and
    # copied twice by this process, so more of them at once than there are CPUs only makes
    # them take turns (4 x 256 MiB here: 1.15 s four at a time, 1.07 s two at a time). Small
    # files wait on the network, not the CPU: they keep --jobs.
    pools = [ThreadPoolExecutor(max_workers=n) if n else None for n in (light_jobs, heavy_jobs)]
    try:
        futures = [
            (pools[1] if big and pools[1] else pools[0]).submit(downloader.fetch, remote)
            for remote, big in zip(remotes, heavy, strict=True)
        ]
        return [future.result() for future in futures]
    finally:
        for pool in pools:
            if pool is not None:
                pool.shutdown()


def _pool_sizes(jobs: int, heavy: list[bool]) -> tuple[int, int]:
    """Workers for the small files and for the heavy ones, ``jobs`` at most in all."""
    big = min(jobs, _cpus())
    if not any(heavy):
        return jobs, 0
    if all(heavy):
        return 0, big
    if jobs == 1:
        return 1, 0  # one file at a time, whatever its size
    big = min(big, jobs - 1)
    return jobs - big, big


# A file this large is a heavy transfer (above): the CPU, not the network, bounds it.
HEAVY = 32 * 1024 * 1024


def _cpus() -> int:
    """The CPUs this process may run on (a CI container's share, where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)
