"""`courier upload`: files, directories and globs to a build, in parallel, with digests.

Each file is hashed (SHA-256, streamed) before it goes up, so that the service can verify it
(`X-Checksum-Sha256`) and a re-run can skip files the build already holds with the same digest.
The bytes are read once more to send them but not hashed again: the service hashes what it
receives and refuses a body that does not match the header (400, nothing stored), so a file
that changes during its upload fails instead of being stored half-old, half-new. Many small
files go up as tar streams (the batch endpoint); the service's answer lists every stored
digest, checked against ours."""

from __future__ import annotations

import glob
import hashlib
import os
import tarfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from . import pace
from .client import (
    EXIT_FAILURE,
    ApiError,
    Client,
    CourierError,
    UsageError,
    printable,
    read_json,
)
from .output import Reporter, human_size

READ_SIZE = 1024 * 1024
# Files up to this size count as small; at least BATCH_MIN of them go up as tar batches of
# at most BATCH_BYTES / BATCH_FILES each (several batches in parallel).
BATCH_FILE_MAX = 1024 * 1024
BATCH_MIN = 8
BATCH_BYTES = 16 * 1024 * 1024
BATCH_FILES = 500
MANIFEST = "SHA256SUMS"


@dataclass
class LocalFile:
    path: Path
    name: str  # path in the build, prefix included
    size: int
    sha256: str = ""


@dataclass
class Outcome:
    name: str
    size: int
    status: str  # uploaded, unchanged, failed
    sha256: str = ""
    error: str = ""
    exit_code: int = EXIT_FAILURE  # of a failure: 3 refused, 4 not found, 1 anything else

    def as_dict(self) -> dict:
        data = {"path": self.name, "size": self.size, "status": self.status}
        if self.sha256:
            data["sha256"] = self.sha256
        if self.error:
            data["error"] = self.error
        return data


@dataclass
class Plan:
    singles: list[LocalFile] = field(default_factory=list)
    batches: list[list[LocalFile]] = field(default_factory=list)


def normalize_prefix(prefix: str | None) -> str:
    if not prefix:
        return ""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def collect(
    paths: list[str], prefix: str, *, include_hidden: bool = False, skipped: list | None = None
) -> list[LocalFile]:
    """The files named by ``paths``: a file goes up under its own name, a directory's files
    under their paths relative to it, a glob as the files and directories it matches.

    Inside a directory, hidden files and directories (a name starting with a dot) stay
    behind unless ``include_hidden``: a checked-out workspace keeps the CI's token in
    `.git/config` and secrets in `.env`. What stays behind is appended to ``skipped``. A
    hidden file named (or matched by a glob) explicitly goes up."""
    found: list[tuple[Path, str]] = []
    for arg in paths:
        matches = [arg] if os.path.lexists(arg) else sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise UsageError(f"no such file or directory: {arg}")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                for root, dirs, files in os.walk(path):
                    if not include_hidden:
                        for name in [d for d in dirs if d.startswith(".")]:
                            dirs.remove(name)
                            if skipped is not None:
                                skipped.extend(_files_under(Path(root) / name))
                        hidden = [f for f in files if f.startswith(".")]
                        if skipped is not None:
                            skipped.extend(Path(root) / f for f in hidden)
                        files = [f for f in files if not f.startswith(".")]
                    dirs.sort()
                    for name in sorted(files):
                        full = Path(root) / name
                        if full.is_symlink() and not _inside(full, path):
                            # A checked-out tree (a pull request's) linking to the runner's
                            # own files (`leak -> ~/.ssh/id_rsa`) must not ship them.
                            raise UsageError(
                                f"refusing a symlink that leaves {printable(path)}:"
                                f" {printable(full)} (name its target explicitly to upload it)"
                            )
                        if not full.is_file():
                            # A FIFO would block the first read forever; a socket or a
                            # device has no content to send; a dangling symlink none.
                            raise UsageError(
                                f"not a regular file: {printable(full)} (leave it out of the"
                                " upload, or upload the files around it by name or glob)"
                            )
                        found.append((full, full.relative_to(path).as_posix()))
            elif path.is_file():
                found.append((path, path.name))
            else:
                raise UsageError(f"not a regular file or directory: {printable(match)}")
    files, seen = [], {}
    for path, rel in found:
        name = prefix + rel
        if name in seen:
            if seen[name] == path.resolve():
                continue
            raise UsageError(f"two files would be uploaded as {name}: {seen[name]} and {path}")
        seen[name] = path.resolve()
        files.append(LocalFile(path=path, name=name, size=path.stat().st_size))
    return files


def _files_under(directory: Path) -> list[Path]:
    return [Path(root) / name for root, _, files in os.walk(directory) for name in files]


def _inside(link: Path, tree: Path) -> bool:
    return link.resolve().is_relative_to(tree.resolve())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(READ_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def batchable(f: LocalFile, prefix: str) -> bool:
    """Small, and a name the manifest can list (one line, not the manifest's own)."""
    rel = f.name[len(prefix) :]
    return f.size <= BATCH_FILE_MAX and rel != MANIFEST and not set(rel) & {"\n", "\r"}


def plan(files: list[LocalFile], *, batch: bool, prefix: str = "") -> Plan:
    small = [f for f in files if batchable(f, prefix)] if batch else []
    if len(small) < BATCH_MIN:
        return Plan(singles=list(files))
    small_names = {f.name for f in small}
    result = Plan(singles=[f for f in files if f.name not in small_names])
    current: list[LocalFile] = []
    size = 0
    for f in small:
        if current and (size + f.size > BATCH_BYTES or len(current) >= BATCH_FILES):
            result.batches.append(current)
            current, size = [], 0
        current.append(f)
        size += f.size
    if current:
        result.batches.append(current)
    return result


class ProgressReader:
    """A file-like body for requests: reads the file and reports progress. ``__len__`` lets
    requests send a Content-Length instead of chunks."""

    def __init__(self, path: Path, size: int, progress: Callable[[int], None]) -> None:
        self.file = path.open("rb")
        self.size = size
        self.progress = progress
        self.sent = 0

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        # Never more than we announced: a file growing during the upload must not make the
        # body longer than its Content-Length.
        remaining = self.size - self.sent
        if remaining <= 0:
            return b""
        n = remaining if n is None or n < 0 else min(max(n, 64 * 1024), remaining)
        data = self.file.read(n)
        if not data:
            # A body shorter than its Content-Length would leave the service waiting for
            # the rest until a timeout, and each retry the same.
            raise CourierError(f"{printable(self.file.name)} shrank while it was being sent")
        self.sent += len(data)
        self.progress(len(data))
        pace.count(len(data))
        return data

    def close(self) -> None:
        self.file.close()


class TarStream:
    """A tar archive (POSIX pax format, so UTF-8 names of any length survive) produced on
    the fly from files on disk: constant memory, and its length known in advance."""

    def __init__(self, files: list[LocalFile], strip: str, progress: Callable[[int], None]):
        self.files, self.strip, self.progress = files, strip, progress
        # A SHA256SUMS member first (sha256sum's format): the service checks every file
        # against it and stores nothing if one differs, as X-Checksum-Sha256 does for a PUT.
        self.manifest = "".join(f"{f.sha256}  {self._name(f)}\n" for f in files).encode()
        manifest_info = tarfile.TarInfo(MANIFEST)
        manifest_info.size, manifest_info.mode, manifest_info.mtime = len(self.manifest), 0o644, 0
        self.manifest_header = manifest_info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self.headers = [self._header(f) for f in files]
        pairs = zip(self.headers, files, strict=True)
        self.length = (
            len(self.manifest_header)
            + _padded(len(self.manifest))
            + sum(len(h) + _padded(f.size) for h, f in pairs)
            + 2 * tarfile.BLOCKSIZE
        )

        self._chunks = self._generate()

    def _name(self, f: LocalFile) -> str:
        return f.name[len(self.strip) :]

    def _header(self, f: LocalFile) -> bytes:
        info = tarfile.TarInfo(self._name(f))
        info.size, info.mode, info.mtime, info.type = f.size, 0o644, 0, tarfile.REGTYPE
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")

    def _generate(self) -> Iterator[bytes]:
        yield self.manifest_header
        yield self.manifest + b"\0" * (_padded(len(self.manifest)) - len(self.manifest))
        for header, f in zip(self.headers, self.files, strict=True):
            yield header
            left = f.size
            with f.path.open("rb") as stream:
                while left > 0:
                    # Pieces small enough that a slow link is seen moving (courier.pace).
                    data = stream.read(min(pace.READ_CHUNK, left))
                    if not data:
                        raise CourierError(f"{f.path} shrank while it was being sent")
                    left -= len(data)
                    self.progress(len(data))
                    yield data
            if f.size % tarfile.BLOCKSIZE:
                # Never an empty chunk: http.client takes one for the end of the body.
                yield b"\0" * (_padded(f.size) - f.size)
        yield b"\0" * (2 * tarfile.BLOCKSIZE)

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        # http.client sends whatever one read returns (whole chunks, no re-slicing) and takes
        # an empty one for the end: skip the empty ones (an empty file, no padding).
        for chunk in self._chunks:
            if chunk:
                pace.count(len(chunk))
                return chunk
        return b""


def _failed(f: LocalFile, exc: CourierError) -> Outcome:
    return Outcome(f.name, f.size, "failed", f.sha256, str(exc), exc.exit_code)


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


class Uploader:
    def __init__(self, client: Client, build: str, prefix: str, reporter: Reporter) -> None:
        self.client, self.build, self.prefix, self.reporter = client, build, prefix, reporter
        self.batch_supported = True
        self.lock = threading.Lock()

    def artifact_url(self, name: str) -> str:
        return f"api/v1/builds/{quote(self.build)}/artifacts/{quote(name, safe='/')}"

    def existing(self) -> dict[str, str]:
        """What the build already holds under our prefix: path -> sha256. Unknown (empty)
        if the listing is refused; the uploads then find out for themselves."""
        params = {"page_size": 1000, **({"prefix": self.prefix} if self.prefix else {})}
        try:
            items = self.client.paginate(f"api/v1/builds/{quote(self.build)}/artifacts/", params)
            return {
                item["path"]: item.get("sha256", "")
                for item in items
                if isinstance(item, dict) and isinstance(item.get("path"), str)
            }
        except ApiError as exc:
            if exc.status in (401, 404):
                raise
            return {}

    def put(self, f: LocalFile) -> Outcome:
        handle = self.reporter.start(f.name, f.size)
        readers: list[ProgressReader] = []

        def body():
            self.reporter.reset(handle, 0)
            if f.size == 0:
                return b""
            reader = ProgressReader(f.path, f.size, lambda n: self.reporter.advance(handle, n))
            readers.append(reader)
            return reader

        try:
            response = self.client.request(
                "PUT",
                self.artifact_url(f.name),
                body=body,
                headers={
                    "X-Checksum-Sha256": f.sha256,
                    "Content-Type": "application/octet-stream",
                },
                expect=(200, 201),
            )
            stored = read_json(response)
            if not isinstance(stored, dict) or stored.get("sha256") != f.sha256:
                raise CourierError("the service stored other bytes than were sent")
        except CourierError as exc:
            self.reporter.finish(handle, f"FAILED {f.name}: {exc}")
            return _failed(f, exc)
        finally:
            for reader in readers:
                reader.close()
        self.reporter.finish(
            handle, f"uploaded {f.name} ({human_size(f.size)}, sha256 {f.sha256[:12]})"
        )
        return Outcome(f.name, f.size, "uploaded", f.sha256)

    def put_batch(self, files: list[LocalFile]) -> list[Outcome]:
        """One tar stream for many small files; falls back to one PUT per file when the
        service has no batch endpoint."""
        if not self.batch_supported:
            return [self.put(f) for f in files]
        total = sum(f.size for f in files)
        handle = self.reporter.start(f"{len(files)} files ({files[0].name} ...)", total)

        def body():
            self.reporter.reset(handle, 0)
            return TarStream(files, self.prefix, lambda n: self.reporter.advance(handle, n))

        params = {"prefix": self.prefix} if self.prefix else None
        try:
            response = self.client.request(
                "POST",
                f"api/v1/builds/{quote(self.build)}/artifacts/batch",
                body=body,
                params=params,
                headers={"Content-Type": "application/x-tar"},
                idempotent=True,  # uploads are idempotent: the same bytes again answer 200
                expect=(200, 201),
            )
        except ApiError as exc:
            if exc.status in (404, 405, 415, 501) and exc.code != "not_found":
                self.reporter.finish(handle, "batch upload not offered: one request per file")
                with self.lock:
                    self.batch_supported = False
                return [self.put(f) for f in files]
            self.reporter.finish(handle, f"FAILED batch of {len(files)} files: {exc}")
            return [_failed(f, exc) for f in files]
        except CourierError as exc:
            self.reporter.finish(handle, f"FAILED batch of {len(files)} files: {exc}")
            return [_failed(f, exc) for f in files]
        try:
            answer = read_json(response)
        except CourierError as exc:
            # Sent, but unconfirmed: a re-run finds out what the build holds.
            self.reporter.finish(handle, f"FAILED batch of {len(files)} files: {exc}")
            return [_failed(f, exc) for f in files]
        artifacts = answer.get("artifacts") if isinstance(answer, dict) else None
        stored = {
            a["path"]: a.get("sha256")
            for a in (artifacts if isinstance(artifacts, list) else [])
            if isinstance(a, dict) and isinstance(a.get("path"), str)
        }
        self.reporter.finish(handle, f"sent batch of {len(files)} files ({human_size(total)})")
        outcomes = []
        for f in files:
            # The tar carries no per-file digest: the service's answer is compared with ours
            # (a file that changed after it was hashed shows here).
            if stored.get(f.name) != f.sha256:
                error = "the service did not confirm this file with our digest"
                self.reporter.line(f"FAILED {f.name}: {error}")
                outcomes.append(Outcome(f.name, f.size, "failed", f.sha256, error))
            else:
                self.reporter.line(
                    f"uploaded {f.name} ({human_size(f.size)}, sha256 {f.sha256[:12]})"
                )
                outcomes.append(Outcome(f.name, f.size, "uploaded", f.sha256))
        return outcomes


def upload(
    *,
    client: Client,
    build: str,
    paths: list[str],
    prefix: str | None,
    jobs: int,
    reporter: Reporter,
    batch: bool = True,
    include_hidden: bool = False,
) -> list[Outcome]:
    prefix = normalize_prefix(prefix)
    skipped: list[Path] = []
    files = collect(paths, prefix, include_hidden=include_hidden, skipped=skipped)
    if skipped:
        reporter.line(
            f"left out {len(skipped)} hidden files (such as {printable(skipped[0])}):"
            " --include-hidden uploads them"
        )
    uploader = Uploader(client, build, prefix, reporter)
    existing = uploader.existing()
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # Digests first (in parallel): they decide what is already there.
        hashed = list(pool.map(lambda f: (f, file_sha256(f.path)), files))
        todo = []
        for f, sha in hashed:
            f.sha256 = sha
            if existing.get(f.name) == sha:
                reporter.line(f"unchanged {f.name} (already in the build)")
                outcomes.append(Outcome(f.name, f.size, "unchanged", sha))
            else:
                todo.append(f)
        work = plan(todo, batch=batch, prefix=prefix)
        reporter.begin(len(todo), sum(f.size for f in todo))
        # Large files first: the long poles start early, small ones fill the gaps.
        singles = sorted(work.singles, key=lambda f: -f.size)
        futures = [pool.submit(uploader.put_batch, b) for b in work.batches]
        futures += [pool.submit(uploader.put, f) for f in singles]
        for future in as_completed(futures):
            result = future.result()
            outcomes.extend(result if isinstance(result, list) else [result])
    order = {f.name: i for i, f in enumerate(files)}
    outcomes.sort(key=lambda o: order.get(o.name, 0))
    return outcomes
