"""Batch upload: many artifacts from one tar stream, linked all or nothing.

The archive is read as a stream (``tarfile`` mode ``r|``): each regular-file member's bytes go
through SHA-256 into a staged object of their own and are published as they arrive, so neither
the archive nor a member is ever held in memory or unpacked as a whole. Once the archive has
been read and checked, the blob rows are recorded (one upsert) and every artifact is linked in
one transaction, counted against the quotas there. Anything refused before that deletes what
was published; a link that fails removes the blobs this batch created.

Hostile archives are refused (nothing stored) before the bytes that make them hostile are
stored: a member's header is checked before its data is read (type, path, size, count,
quota), and decompressed bytes are bounded by a ratio to the compressed bytes read.
"""

import hashlib
import io
import logging
import os
import tarfile
import threading
import zlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from builds.models import Build, Project
from tokens import services as token_services
from tokens.errors import InvalidCredential
from tokens.models import ApiKey

from . import storage, usage
from .errors import (
    ArtifactConflict,
    BlobVanished,
    BodyStalled,
    BuildNotWritable,
    ChecksumMismatch,
    IncompleteBody,
    InvalidArchive,
    InvalidArtifactPath,
    QuotaExceeded,
)
from .models import Artifact, Blob
from .paths import artifact_path_clean
from .services import blob_discard_unlinked
from .transfer import blob_write, body_idle_timeout, body_stalled

logger = logging.getLogger(__name__)

MANIFEST = "SHA256SUMS"
# A manifest, and the metadata tar reads between two members (pax headers, GNU long names), are
# read into memory: bounded well above any real one (paths are at most 1024 characters).
_MANIFEST_MAX = 4 * 1024 * 1024
_HEADER_MAX = 1024 * 1024
# Decompressed bytes always allowed before the expansion ratio applies (small archives of
# repetitive text compress far better than large ones).
_EXPANSION_FLOOR = 16 * 1024 * 1024
_CHUNK = 1024 * 1024
# Members up to _SMALL bytes are hashed in memory before they are stored, in groups of at most
# _ROWS_PER_STATEMENT members and _PENDING_BYTES bytes (see _SmallMembers).
_SMALL = 64 * 1024
_PENDING_BYTES = 8 * 1024 * 1024
ENCODINGS = ("identity", "gzip", "zstd")


@dataclass
class StoredMember:
    path: str
    size: int
    sha256: str
    # The object written for it; None: nothing was written, the blob row holds the bytes (the
    # project's artifacts already held them, or another member of the batch wrote them).
    name: str | None


@dataclass(frozen=True)
class BatchResult:
    # Every file's path, size and digest, in archive order: what the answer lists. No model
    # instances: building thousands of them was a tenth of a batch's time.
    artifacts: list[StoredMember]
    created: int


class _Body(io.RawIOBase):
    """The request body as a file: at most ``content_length`` bytes (None: to EOF, chunked),
    hashed as read, short bodies raising IncompleteBody."""

    def __init__(self, stream, content_length: int | None) -> None:
        self.stream, self.remaining = stream, content_length
        self.read_bytes = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = len(buffer) if self.remaining is None else min(len(buffer), self.remaining)
        if want == 0:
            return 0
        try:
            data = self.stream.read(want)
        except TimeoutError as exc:  # ARTIFACT_UPLOAD_IDLE_TIMEOUT without a byte: 408
            raise body_stalled(self.stream, self.read_bytes) from exc
        except Exception as exc:  # a reset socket, gunicorn's NoMoreData, bad chunking
            raise IncompleteBody(
                f"The request body could not be read after {self.read_bytes} bytes "
                f"({type(exc).__name__}); nothing was stored."
            ) from exc
        if not data:
            if self.remaining:
                raise IncompleteBody(
                    f"The request body ended after {self.read_bytes} bytes; nothing was stored."
                )
            return 0
        n = len(data)
        buffer[:n] = data
        self.read_bytes += n
        self.digest.update(data)
        if self.remaining is not None:
            self.remaining -= n
        return n


class _Expanded(io.RawIOBase):
    """The decompressed archive, counted: more than ``ratio`` times the compressed bytes read
    (past a floor) is a decompression bomb, and so is metadata larger than _HEADER_MAX between
    two members."""

    def __init__(self, source, body: _Body, ratio: int | None) -> None:
        self.source, self.body, self.ratio = source, body, ratio
        self.total = 0
        self.metadata = 0  # bytes read since the last member's data, while reading headers
        self.in_headers = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self.source.read(len(buffer))
        except (BodyStalled, IncompleteBody, InvalidArchive, QuotaExceeded):
            raise
        except Exception as exc:  # zlib.error, zstandard.ZstdError, EOFError, ...
            raise InvalidArchive(f"The body could not be decompressed ({exc}).") from exc
        n = len(data)
        buffer[:n] = data
        self.total += n
        if self.in_headers:
            self.metadata += n
            # A header read may pull in up to two buffer fills of what follows it.
            if self.metadata > _HEADER_MAX + 2 * _CHUNK:
                raise InvalidArchive("A tar header (pax or long name) is too large.")
        if (
            self.ratio is not None
            and self.total > _EXPANSION_FLOOR
            and self.total > self.ratio * max(self.body.read_bytes, 1)
        ):
            raise QuotaExceeded(
                f"The archive expands to more than {self.ratio} times its compressed size: "
                "refused as a decompression bomb.",
                code="decompression_bomb",
            )
        return n


def _decompressed(body: _Body, encoding: str):
    if encoding == "gzip":
        # wbits 16+MAX_WBITS: the gzip container; fed through a buffered reader in chunks.
        return io.BufferedReader(_Inflate(body), _CHUNK)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(
            body, read_size=_CHUNK, read_across_frames=True
        )
    return body


class _Inflate(io.RawIOBase):
    """gzip decompression as a raw stream, never producing more than asked for at once (so a
    bomb cannot make one read() return gigabytes)."""

    def __init__(self, body: _Body) -> None:
        self.body = body
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.pending = b""
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = len(buffer)
        while not self.pending and not self.eof:
            if self.inflater.unconsumed_tail:
                chunk = self.inflater.unconsumed_tail
            else:
                chunk = self.body.read(_CHUNK)
                if not chunk:
                    if not self.inflater.eof:
                        raise InvalidArchive("The gzip stream ends before its end marker.")
                    self.eof = True
                    break
            if self.inflater.eof:  # trailing bytes after the gzip member: ignore, as gzip -d
                self.eof = True
                break
            self.pending = self.inflater.decompress(chunk, want)
        n = min(want, len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def _prefix_clean(prefix: str) -> str:
    """``dist`` and ``dist/`` both mean the directory ``dist/``; empty means the top."""
    if not prefix:
        return ""
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    try:
        artifact_path_clean(prefix[:-1])
    except InvalidArtifactPath as exc:
        raise InvalidArtifactPath(f"prefix: {exc.detail}", code="invalid_prefix") from None
    return prefix


def _member_path(member: tarfile.TarInfo, prefix: str) -> str | None:
    """The artifact path a member becomes (None for a directory), or raise why it may not."""
    name = member.name
    while name.startswith("./"):  # `tar -C dir -cf - .` names members ./a/b
        name = name[2:]
    if member.isdir():
        return None
    kind = _KINDS.get(member.type)
    if kind is not None:
        raise InvalidArchive(f"Member {member.name!r} is a {kind}: only regular files are taken.")
    if not member.isreg() or member.issparse():
        raise InvalidArchive(f"Member {member.name!r} is not a regular file.")
    try:
        return artifact_path_clean(prefix + name)
    except InvalidArtifactPath as exc:
        raise InvalidArtifactPath(f"Member {member.name!r}: {exc.detail}") from None


_KINDS = {
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


def _manifest_parse(data: bytes) -> dict[str, str]:
    """``sha256sum`` output: ``<hex>  <name>`` (or ``<hex> *<name>``) per line."""
    sums = {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArchive(f"{MANIFEST} is not UTF-8 text.") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition(" ")
        name = name[1:] if name[:1] in {" ", "*"} else name
        digest = digest.lower()
        if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidArchive(f"{MANIFEST} line {number} is not '<sha256>  <path>'.")
        while name.startswith("./"):
            name = name[2:]
        sums[name] = digest
    return sums


def artifacts_store_batch(
    *,
    build: Build,
    stream,
    content_length: int | None,
    encoding: str = "identity",
    prefix: str = "",
    expected_sha256: str | None = None,
    key: ApiKey | None = None,
    path_check: Callable[[str], None] = lambda path: None,
) -> BatchResult:
    """Store every regular file of the tar archive in ``stream`` as an artifact of ``build``
    under ``prefix``; all or nothing. ``path_check`` raises for a path the key may not write.
    ``expected_sha256`` is the SHA-256 of the body as sent; a ``SHA256SUMS`` member at the
    archive's top, if present, must list every file with its digest (it is not stored)."""
    prefix = _prefix_clean(prefix)
    if not build.is_running:
        raise BuildNotWritable()
    if encoding not in ENCODINGS:
        raise InvalidArchive(f"Content-Encoding must be one of {', '.join(ENCODINGS)}.")
    members: list[StoredMember] = []
    try:
        with body_idle_timeout(stream):
            manifest = _receive(
                build=build,
                stream=stream,
                content_length=content_length,
                encoding=encoding,
                prefix=prefix,
                expected_sha256=expected_sha256,
                path_check=path_check,
                members=members,
            )
        if manifest is not None:
            _manifest_check(manifest, members, prefix)
        if not members:
            raise InvalidArchive("The archive holds no regular file.")
    except BaseException:
        _objects_delete([m.name for m in members if m.name])
        raise
    return _link(build=build, key=key, members=members)


def _receive(
    *, build, stream, content_length, encoding, prefix, expected_sha256, path_check, members
) -> dict[str, str] | None:
    body = _Body(stream, content_length)
    ratio = settings.ARTIFACT_BATCH_MAX_EXPANSION if encoding != "identity" else None
    expanded = _Expanded(_decompressed(body, encoding), body, ratio)
    room, reason = usage.usage_room(build=build, files=0)
    files_left = settings.BUILD_ARTIFACTS_MAX_FILES - build.used_files
    max_size = settings.ARTIFACT_MAX_SIZE  # read once: a lazy settings lookup per member adds up
    seen: set[str] = set()
    manifest = None
    total = 0
    try:
        reader = io.BufferedReader(expanded, _CHUNK)
        archive = tarfile.open(  # noqa: SIM115 (closed by `with` below)
            fileobj=reader, mode="r|", tarinfo=_TarInfo
        )
    except tarfile.TarError as exc:
        raise InvalidArchive(f"The body is not a tar archive ({exc}).") from exc
    with _SmallMembers(project_id=build.project_id) as small, archive:
        while True:
            expanded.in_headers, expanded.metadata = True, 0
            try:
                member = archive.next()
            except tarfile.TarError as exc:
                raise InvalidArchive(f"The tar archive is damaged ({exc}).") from exc
            expanded.in_headers = False
            # tarfile remembers every member it has read (for getmembers()); a stream read once
            # needs none of them, and directory entries count against no quota, so an archive of
            # millions of them would otherwise grow the process without bound.
            archive.members.clear()
            if member is None:
                if not getattr(archive, "ended", False):
                    raise InvalidArchive(
                        "The tar archive ends without its end-of-archive blocks: it was cut "
                        "short or is damaged; nothing was stored."
                    )
                break
            is_manifest = member.name.removeprefix("./") == MANIFEST and member.isreg()
            path = None if is_manifest else _member_path(member, prefix)
            if path is None and not is_manifest:
                continue
            key_name = MANIFEST if is_manifest else path
            if key_name in seen:
                raise InvalidArchive(f"The archive holds {member.name!r} twice.")
            seen.add(key_name)
            if is_manifest:
                if member.size > _MANIFEST_MAX:
                    raise InvalidArchive(f"{MANIFEST} is larger than {_MANIFEST_MAX} bytes.")
                manifest = _manifest_parse(_read_all(archive, member))
                continue
            path_check(path)
            if member.size > max_size:
                raise QuotaExceeded(
                    f"Member {member.name!r} is larger than an artifact may be ({max_size} bytes)."
                )
            if len(members) + 1 > files_left:
                raise QuotaExceeded(usage.files_sentence())
            total += member.size
            if total > room:
                raise QuotaExceeded(reason)
            if member.size <= _SMALL:
                data = _read_all(archive, member)
                stored = StoredMember(path, member.size, hashlib.sha256(data).hexdigest(), None)
                members.append(stored)
                small.add(stored, data)
            else:
                members.append(_store_member(archive, member, path))
        if expected_sha256 is not None:
            _drain(body)
            if body.digest.hexdigest() != expected_sha256:
                raise ChecksumMismatch("The body's SHA-256 does not match X-Checksum-Sha256.")
    return manifest


class _TarInfo(tarfile.TarInfo):
    """Marks the archive ``ended`` when a header block is the end-of-archive (zero) block.
    tarfile also ends an archive, without a word, at a header cut short or damaged after the
    first member: an archive cut at a member's boundary (a producer that died, a body that
    ended early without a Content-Length) would otherwise be taken as complete."""

    @classmethod
    def fromtarfile(cls, archive):
        try:
            return super().fromtarfile(archive)
        except tarfile.EOFHeaderError:
            archive.ended = True
            raise


class _SmallMembers:
    """Small members, hashed, waiting to be stored. A group costs one query: which of its
    digests an artifact of the project already holds. Those bytes are not written again, as
    a single upload whose announced digest the project holds is only hashed (docs/design.md,
    "Dedup across projects"): looking only within the project, and at digests of bytes
    received and hashed here, reveals nothing of other projects. A digest twice in the batch
    is written once. Rebuilding a project mostly re-sends files it already has; for those
    this saves creating, renaming and then deleting a duplicate object per file."""

    def __init__(self, *, project_id: int) -> None:
        self.project_id = project_id
        self.pending: list[tuple[StoredMember, bytes]] = []
        self.size = 0
        self.stored: set[str] = set()  # digests written, or held by the project
        # On S3: the group being written. At most ARTIFACT_BATCH_S3_WRITERS of its writes are in
        # the shared pool at a time (``running``); each one done sends the next. The pool's
        # queue is first come, first served: a batch that put a whole group in it would make
        # every other batch's writes wait behind all of them.
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.queue: deque[tuple[StoredMember, bytes]] = deque()
        self.running = 0
        self.limit = 1
        self.error: BaseException | None = None
        self.failed = False  # the batch failed: writes sent but not begun are skipped
        self.writers: ThreadPoolExecutor | None = None

    def __enter__(self) -> "_SmallMembers":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.flush()
            self.wait()
            return
        # The batch failed: writes not yet sent never are. No write may still be running (or
        # unnamed) when the caller deletes what the batch wrote; the error that stopped the
        # batch is the one reported.
        with self.lock:
            self.failed = True
            self.queue.clear()
        try:
            self.wait()
        except Exception:
            logger.exception("a batch member's write failed after the batch had failed")

    def add(self, member: StoredMember, data: bytes) -> None:
        self.pending.append((member, data))
        self.size += len(data)
        if len(self.pending) >= _ROWS_PER_STATEMENT or self.size >= _PENDING_BYTES:
            self.flush()

    def flush(self) -> None:
        """Store the pending group. On S3 its objects are written by a few threads at once
        while the archive is read on; the group before it must be written first, so at most
        two groups' bytes are held at once."""
        if not self.pending:
            return
        self.wait()
        digests = {m.sha256 for m, _ in self.pending} - self.stored
        held = Artifact.objects.filter(blob_id=OuterRef("pk"), build__project_id=self.project_id)
        if digests:
            self.stored.update(
                Blob.objects.filter(sha256__in=digests)
                .filter(Exists(held))
                .values_list("sha256", flat=True)
            )
        local = storage.blob_storage_local()
        for member, data in self.pending:
            if member.sha256 in self.stored:
                continue
            self.stored.add(member.sha256)
            if local:
                member.name = _store_bytes(data, member.sha256)
            else:
                self.queue.append((member, data))
        self.pending.clear()
        self.size = 0
        if self.queue:
            self.writers = _writers()
            self.limit = max(1, settings.ARTIFACT_BATCH_S3_WRITERS)
            with self.lock:
                self._send()

    def _send(self) -> None:
        """Send queued writes to the pool, up to the batch's share of it (lock held)."""
        while self.queue and self.running < self.limit and self.error is None:
            member, data = self.queue.popleft()
            try:
                self.writers.submit(self._write, member, data)
            except BaseException as exc:  # the pool is shut down (the interpreter is exiting)
                self.error = exc
                self.queue.clear()
                return
            self.running += 1

    def _write(self, member: StoredMember, data: bytes) -> None:
        with self.lock:
            skip = self.failed or self.error is not None
        try:
            name = None if skip else _store_bytes(data, member.sha256)
        except BaseException as exc:
            with self.lock:
                self.error = self.error or exc
                self.queue.clear()  # the batch has failed: nothing more to write
                self.running -= 1
                self.idle.notify_all()
            return
        with self.lock:
            member.name = name  # None: skipped, nothing written
            self.running -= 1
            self._send()
            self.idle.notify_all()

    def wait(self) -> None:
        """Every write sent has finished and its object is named on its member (so a failure
        deletes it with the rest). The first error is raised once none is left running."""
        with self.lock:
            while self.running:
                self.idle.wait()
            error, self.error = self.error, None
            self.queue.clear()
        if error is not None:
            raise error


# A batch's small objects go to S3 from a few threads at once: each is a request that spends
# its time waiting on the network, with the GIL released. (Local files are written inline:
# threads made a local batch slower, the GIL handed back and forth for every file.) One pool
# per process, shared by the batches it serves at once: it also bounds how many requests a
# process makes to the store at a time.
_writer_pool: tuple[int, ThreadPoolExecutor] | None = None
_writer_pool_lock = threading.Lock()


def _writers() -> ThreadPoolExecutor:
    global _writer_pool
    with _writer_pool_lock:
        # A pool's threads do not survive a fork: a child process makes its own.
        if _writer_pool is None or _writer_pool[0] != os.getpid():
            pool = ThreadPoolExecutor(
                max_workers=settings.ARTIFACT_BATCH_S3_WRITERS, thread_name_prefix="batch-writer"
            )
            _writer_pool = (os.getpid(), pool)
        return _writer_pool[1]


def _read_all(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    # A plain member's bytes follow its header in the stream: read them straight from it
    # (tarfile then skips the padding itself). extractfile() builds a buffered file object per
    # member, a tenth of a small file's time in a batch.
    stream = archive.fileobj
    if not member.issparse() and stream.tell() == member.offset_data:
        data = stream.read(member.size)
    else:
        data = archive.extractfile(member).read(member.size)
    if len(data) != member.size:
        raise InvalidArchive(f"Member {member.name!r} ends early.")
    return data


@contextmanager
def _staged():
    """A blob writer, aborted (its staged object removed) if anything fails before commit."""
    writer = storage.blob_writer_open()
    try:
        yield writer
    except BaseException:
        try:
            writer.abort()
        except Exception:
            logger.exception("could not discard a staged member")
        raise


def _store_member(archive: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> StoredMember:
    source = archive.extractfile(member)
    digest = hashlib.sha256()
    with _staged() as writer:
        remaining = member.size
        while remaining:
            data = source.read(min(_CHUNK, remaining))
            if not data:
                raise InvalidArchive(f"Member {member.name!r} ends early.")
            remaining -= len(data)
            digest.update(data)
            blob_write(writer, data)
        sha256 = digest.hexdigest()
        name = writer.commit(sha256=sha256)
    return StoredMember(path=path, size=member.size, sha256=sha256, name=name)


def _store_bytes(data: bytes, sha256: str) -> str:
    with _staged() as writer:
        blob_write(writer, data)
        return writer.commit(sha256=sha256)


def _drain(body: _Body) -> None:
    """Read what the archive's end left of the body (tar pads with zero blocks), so its digest
    covers all of it."""
    while body.read(_CHUNK):
        pass


def _manifest_check(manifest: dict[str, str], members: list[StoredMember], prefix: str) -> None:
    stored = {m.path.removeprefix(prefix): m.sha256 for m in members}
    for name, digest in manifest.items():
        if name not in stored:
            raise ChecksumMismatch(f"{MANIFEST} lists {name!r}, which the archive does not hold.")
        if stored[name] != digest:
            raise ChecksumMismatch(f"{name!r} does not match its SHA-256 in {MANIFEST}.")
    unlisted = sorted(set(stored) - set(manifest))
    if unlisted:
        raise ChecksumMismatch(f"{MANIFEST} does not list {unlisted[0]!r}.")


def _objects_delete(names: list[str]) -> None:
    for name in names:
        try:
            storage.blob_delete(name)
        except Exception:  # retention's reconciliation removes what is left
            logger.exception("could not delete the object %s", name)


_ROWS_PER_STATEMENT = 500


def _link(*, build: Build, key: ApiKey | None, members: list[StoredMember]) -> BatchResult:
    # Blob rows first, in one transaction (one commit): an upsert per 500 distinct digests, in
    # digest order, so two batches sharing digests take their rows' locks in the same order.
    # A digest twice in the batch, or already stored: the extra objects are deleted at once.
    first: dict[str, StoredMember] = {}
    duplicates = []
    for m in members:
        if m.name is None:  # nothing written: linked to the blob row that holds its bytes
            continue
        if m.sha256 in first:
            duplicates.append(m.name)
        else:
            first[m.sha256] = m
    _objects_delete(duplicates)
    unique = sorted(first.values(), key=lambda m: m.sha256)
    holders: dict[str, str] = {}
    now = timezone.now()
    with transaction.atomic():
        for i in range(0, len(unique), _ROWS_PER_STATEMENT):
            chunk = [(m.sha256, m.size, m.name) for m in unique[i : i + _ROWS_PER_STATEMENT]]
            holders.update(Blob.objects.publish(chunk, now=now))
    _objects_delete([m.name for m in unique if holders[m.sha256] != m.name])
    try:
        return _link_rows(build=build, key=key, members=members)
    except BaseException:
        for m in unique:
            if holders[m.sha256] == m.name:  # this batch created the blob
                blob = Blob(sha256=m.sha256, size=m.size, storage_name=m.name, referenced_at=now)
                blob_discard_unlinked(blob=blob)
        raise


def _link_rows(*, build: Build, key: ApiKey | None, members: list[StoredMember]) -> BatchResult:
    if key is not None and not token_services.key_alive(key=key):
        raise InvalidCredential(
            "This API token was revoked during the upload; nothing was stored.", code="revoked"
        )
    now = timezone.now()
    paths = [m.path for m in members]
    try:
        with transaction.atomic():
            # Build, then project: the order the single upload's statement locks them in.
            locked = Build.objects.select_for_update().filter(pk=build.pk).first()
            if locked is None or not locked.is_running:
                raise BuildNotWritable()
            project = Project.objects.select_for_update(no_key=True).get(pk=locked.project_id)
            existing = {}
            # The build's file count is kept in the same transactions as its rows, and its row
            # is locked: a build that holds nothing needs no look for its paths.
            for i in range(0, len(paths) if locked.used_files else 0, _ROWS_PER_STATEMENT):
                chunk = paths[i : i + _ROWS_PER_STATEMENT]
                existing.update(
                    Artifact.objects.filter(build_id=build.pk, path__in=chunk).values_list(
                        "path", "blob_id"
                    )
                )
            new = []
            for m in members:
                if m.path not in existing:
                    new.append(m)
                elif existing[m.path] != m.sha256:
                    raise ArtifactConflict(
                        f"{m.path} already holds different bytes (sha256 {existing[m.path]}); "
                        "artifacts are immutable."
                    )
            size = sum(m.size for m in new)
            refusal = _quota_refusal(locked, project, size=size, files=len(new))
            if refusal is not None:
                raise refusal
            ids: dict[str, int] = {}
            for i in range(0, len(new), _ROWS_PER_STATEMENT):
                rows = [
                    {
                        "build_id": build.pk,
                        "path": m.path,
                        "blob_id": m.sha256,
                        "content_type": "application/octet-stream",
                    }
                    for m in new[i : i + _ROWS_PER_STATEMENT]
                ]
                ids.update(Artifact.objects.insert_new(rows, created_at=now))
            if len(ids) != len(new):
                raise ArtifactConflict("Some paths were uploaded concurrently; retry the batch.")
    except IntegrityError as exc:  # a blob's row went (retention): the bytes must come again
        raise BlobVanished() from exc
    return BatchResult(artifacts=members, created=len(ids))


def _quota_refusal(build: Build, project: Project, *, size: int, files: int):
    if build.used_files + files > settings.BUILD_ARTIFACTS_MAX_FILES:
        return QuotaExceeded(usage.files_sentence())
    if build.used_bytes + size > settings.BUILD_ARTIFACTS_QUOTA:
        return QuotaExceeded(usage.build_bytes_sentence())
    if project.used_bytes + size > settings.PROJECT_ARTIFACTS_QUOTA:
        return QuotaExceeded(usage.project_bytes_sentence())
    return None
