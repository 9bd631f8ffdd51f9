"""POST /api/v1/builds/{id}/artifacts/batch: a tar stream, every regular file an artifact,
all or nothing; hostile archives refused with nothing stored."""

import gzip
import hashlib
import io
import os
import tarfile

import pytest
import zstandard

from artifacts import batch, storage
from artifacts.models import Artifact
from devtools.factories import make_build, make_project
from tokens import services as token_services
from tokens.scopes import Scope

from .conftest import Store, download, sha256, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def store(settings, tmp_path) -> Store:
    """The filesystem store only: members are written with the same writers as single uploads,
    which are tested against S3 as well; an S3 run of this file triples its time."""
    store = Store("filesystem", root=tmp_path / "store")
    settings.STORAGES = {**settings.STORAGES, "default": store.storage_options()}
    return store


def member(name: str, data: bytes = b"", **fields) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for field, value in fields.items():
        setattr(info, field, value)
    return info, data


def archive(*members, fmt=tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            if info.isreg():
                tar.addfile(info, io.BytesIO(data))
            else:
                info.size = 0
                tar.addfile(info)
    return out.getvalue()


def files(*pairs) -> bytes:
    return archive(*(member(name, data) for name, data in pairs))


def post(api, build, body: bytes, *, prefix=None, encoding=None, headers=None, **kwargs):
    url = f"/api/v1/builds/{build.build.pk}/artifacts/batch"
    if prefix is not None:
        url += f"?prefix={prefix}"
    headers = dict(headers or {})
    if encoding:
        headers["Content-Encoding"] = encoding
    return api.as_key(kwargs.pop("token", build.token)).generic(
        "POST",
        url,
        body,
        content_type=kwargs.pop("content_type", "application/x-tar"),
        headers=headers,
    )


def nothing_stored(build, store) -> bool:
    return not Artifact.objects.filter(build=build.build).exists() and store.objects() == []


COMPRESS = {
    "identity": lambda body: body,
    "gzip": gzip.compress,
    "zstd": lambda body: zstandard.ZstdCompressor().compress(body),
}


@pytest.mark.parametrize("encoding", COMPRESS)
def test_every_file_of_the_archive_becomes_an_artifact_under_the_prefix(
    api, build, store, encoding
):
    report, log = b"<testsuite/>", os.urandom(3000)
    body = archive(
        member("./", type=tarfile.DIRTYPE),
        member("./reports", type=tarfile.DIRTYPE),
        member("./reports/junit.xml", report),
        member("./build.log", log),
        member("empty.txt", b""),
    )

    response = post(api, build, COMPRESS[encoding](body), prefix="ci/1", encoding=encoding)

    assert response.status_code == 201, response.content
    assert response.json() == {
        "artifacts": [
            {"path": "ci/1/reports/junit.xml", "size": len(report), "sha256": sha256(report)},
            {"path": "ci/1/build.log", "size": len(log), "sha256": sha256(log)},
            {"path": "ci/1/empty.txt", "size": 0, "sha256": sha256(b"")},
        ]
    }
    assert download(api, build.token, build.build.pk, "ci/1/build.log").body == log
    detail = api.as_key(build.token).get(f"/api/v1/builds/{build.build.pk}/").json()
    assert (detail["artifact_count"], detail["total_size"]) == (3, len(report) + len(log))


def test_identical_files_are_stored_once_and_sending_the_batch_again_changes_nothing(
    api, build, store
):
    same = os.urandom(1000)
    body = files(("a", same), ("b", same), ("c", b"other"))
    first = post(api, build, body)
    assert first.status_code == 201
    assert len(store.objects()) == 2

    again = post(api, build, body)

    assert again.status_code == 200 and again.json() == first.json()
    assert Artifact.objects.filter(build=build.build).count() == 3
    assert len(store.objects()) == 2


def test_a_path_holding_other_bytes_refuses_the_whole_batch(api, build, store):
    assert upload(api, build.token, build.build.pk, "b", b"before").status_code == 201
    response = post(api, build, files(("a", b"new"), ("b", b"after")))
    assert response.status_code == 409
    assert list(Artifact.objects.filter(build=build.build).values_list("path", flat=True)) == ["b"]
    assert len(store.objects()) == 1


def test_a_manifest_is_verified_and_not_stored(api, build, store):
    data = {"a.txt": b"alpha", "d/b.txt": b"beta"}
    sums = "".join(f"{sha256(v)}  ./{k}\n" for k, v in data.items()).encode()
    response = post(api, build, files(("SHA256SUMS", sums), *data.items()))
    assert response.status_code == 201, response.content
    assert [a["path"] for a in response.json()["artifacts"]] == ["a.txt", "d/b.txt"]


@pytest.mark.parametrize(
    "sums",
    [
        "{a}  a.txt\n{wrong}  d/b.txt\n",  # a digest that does not match
        "{a}  a.txt\n",  # a file the manifest does not list
        "{a}  a.txt\n{b}  d/b.txt\n{a}  missing.txt\n",  # a listed file not in the archive
        "not a manifest\n",
    ],
)
def test_a_manifest_that_does_not_match_stores_nothing(api, build, store, sums):
    data = {"a.txt": b"alpha", "d/b.txt": b"beta"}
    text = sums.format(a=sha256(b"alpha"), b=sha256(b"beta"), wrong="0" * 64).encode()
    response = post(api, build, files(*data.items(), ("SHA256SUMS", text)))
    assert response.status_code == 400
    assert response.json()["code"] in {"checksum_mismatch", "invalid_archive"}
    assert nothing_stored(build, store)


def test_the_body_checksum_header_is_verified(api, build, store):
    body = files(("a", b"alpha"))
    bad = post(api, build, body, headers={"X-Checksum-Sha256": "0" * 64})
    assert bad.status_code == 400 and bad.json()["code"] == "checksum_mismatch"
    assert nothing_stored(build, store)
    good = post(api, build, body, headers={"X-Checksum-Sha256": hashlib.sha256(body).hexdigest()})
    assert good.status_code == 201


HOSTILE = {
    "absolute path": [member("/etc/passwd", b"x")],
    "parent segment": [member("a/../../b", b"x")],
    "symlink": [member("link", linkname="/etc/passwd", type=tarfile.SYMTYPE)],
    "hard link": [member("ok", b"x"), member("hard", linkname="ok", type=tarfile.LNKTYPE)],
    "character device": [member("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)],
    "fifo": [member("fifo", type=tarfile.FIFOTYPE)],
    "duplicate name": [member("a", b"1"), member("./a", b"1")],
    "control character": [member("a\nb", b"x")],
    "backslash": [member("a\\b", b"x")],
}


@pytest.mark.parametrize("members", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_members_refuse_the_batch_with_nothing_stored(api, build, store, members):
    response = post(api, build, archive(member("fine.txt", b"fine"), *members))
    assert response.status_code == 400, response.content
    assert response.json()["code"] in {"invalid_archive", "invalid_path"}
    assert nothing_stored(build, store)


@pytest.mark.parametrize(
    "body", [b"", b"not a tar archive at all" * 100, files(("a", b"x"))[:700]], ids=str
)
def test_a_body_that_is_no_tar_archive_is_400(api, build, store, body):
    response = post(api, build, body)
    assert response.status_code == 400 and response.json()["code"] == "invalid_archive"
    assert nothing_stored(build, store)


def test_a_damaged_compressed_stream_is_400(api, build, store):
    body = gzip.compress(files(("a", os.urandom(5000))))
    response = post(api, build, body[: len(body) // 2], encoding="gzip")
    assert response.status_code == 400
    assert nothing_stored(build, store)


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [("application/octet-stream", None), ("application/x-tar", "br")],
)
def test_other_media_types_and_encodings_are_415(api, build, content_type, encoding):
    response = post(api, build, files(("a", b"x")), content_type=content_type, encoding=encoding)
    assert response.status_code == 415


def test_a_member_over_the_size_limit_is_413_before_its_bytes_are_stored(
    api, build, store, settings
):
    settings.ARTIFACT_MAX_SIZE = 1000
    response = post(api, build, files(("small", b"x" * 10), ("big", os.urandom(1001))))
    assert response.status_code == 413
    assert "big" in response.json()["detail"]
    assert nothing_stored(build, store)


def test_more_members_than_the_file_quota_is_413(api, build, store, settings):
    settings.BUILD_ARTIFACTS_MAX_FILES = 3
    assert upload(api, build.token, build.build.pk, "already", b"1").status_code == 201
    response = post(api, build, files(*[(f"f{i}", b"") for i in range(3)]))
    assert response.status_code == 413
    assert response.json()["detail"] == "A build may have at most 3 artifacts."
    assert Artifact.objects.filter(build=build.build).count() == 1


def test_a_batch_over_the_build_quota_is_413(api, build, store, settings):
    settings.BUILD_ARTIFACTS_QUOTA = 2500
    response = post(api, build, files(*[(f"f{i}", os.urandom(1000)) for i in range(3)]))
    assert response.status_code == 413 and "build" in response.json()["detail"]
    assert nothing_stored(build, store)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_a_decompression_bomb_is_413_with_nothing_stored(api, build, store, settings, encoding):
    settings.ARTIFACT_BATCH_MAX_EXPANSION = 50
    zeros = files(("zeros.bin", bytes(40 * 1024 * 1024)))
    body = COMPRESS[encoding](zeros)
    assert len(body) * 50 < len(zeros)
    response = post(api, build, body, encoding=encoding)
    assert response.status_code == 413
    assert response.json()["code"] == "decompression_bomb"
    assert nothing_stored(build, store)


def test_a_huge_pax_header_is_refused_without_being_read_into_memory(api, build, store):
    info = tarfile.TarInfo("a")
    info.pax_headers = {"comment": "x" * (8 * 1024 * 1024)}
    body = archive((info, b"data"))
    response = post(api, build, body)
    assert response.status_code == 400 and "header" in response.json()["detail"]
    assert nothing_stored(build, store)


def test_a_prefix_limited_key_cannot_reach_outside_its_prefix(api, build, store):
    _, token = token_services.key_derive(
        parent=build.key, scopes=[Scope.ARTIFACTS_WRITE, Scope.ARTIFACTS_READ], path_prefix="dist"
    )
    inside = post(api, build, files(("a", b"1")), prefix="dist", token=token)
    assert inside.status_code == 201
    outside = post(api, build, files(("b", b"2")), prefix="docs", token=token)
    assert outside.status_code == 403 and outside.json()["code"] == "path_not_allowed"
    sneaky = post(api, build, files(("../docs/c", b"3")), prefix="dist", token=token)
    assert sneaky.status_code == 400
    assert list(Artifact.objects.values_list("path", flat=True)) == ["dist/a"]


def test_an_invalid_prefix_is_400(api, build):
    response = post(api, build, files(("a", b"1")), prefix="../x")
    assert response.status_code == 400 and response.json()["code"] == "invalid_prefix"


def test_a_finished_build_takes_no_batch(api, build, store):
    from builds import services as build_services
    from builds.models import Build

    build_services.build_finish(build=build.build, state=Build.State.SUCCEEDED)
    response = post(api, build, files(("a", b"1")))
    assert response.status_code in {403, 409}
    assert nothing_stored(build, store)


def test_an_artifact_named_batch_is_still_an_artifact(api, build, store):
    assert upload(api, build.token, build.build.pk, "batch", b"just a file").status_code == 201
    assert download(api, build.token, build.build.pk, "batch").body == b"just a file"


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_an_archive_of_many_megabytes_and_files_goes_through_whole(api, build, store, encoding):
    """Headers fall at every offset of the reader's buffer fills: none is taken for a bomb."""
    data = {f"d{i % 7}/f{i}.bin": os.urandom(1000 + 37 * i) for i in range(300)}
    response = post(api, build, COMPRESS[encoding](files(*data.items())), encoding=encoding)
    assert response.status_code == 201, response.content
    assert {a["path"]: a["sha256"] for a in response.json()["artifacts"]} == {
        path: sha256(body) for path, body in data.items()
    }


def test_directory_members_do_not_accumulate_in_memory(api, build, store):
    """Directory entries count against no quota, so an archive may hold any number of them:
    what the server keeps must not grow with their number (tarfile remembers every member it
    has read unless told not to). Peak memory of a batch of 5 000 entries against one of
    35 000: the stream's buffers are the same, only remembered entries would differ."""
    import tracemalloc

    def peak_for(count: int) -> int:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(count):
                info = tarfile.TarInfo(f"d{i:08d}")
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            info, data = member(f"last-{count}.txt", b"the one file")
            tar.addfile(info, io.BytesIO(data))
        body = gzip.compress(out.getvalue())
        tracemalloc.start()
        try:
            response = post(api, build, body, encoding="gzip")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert response.status_code == 201, response.content
        assert [a["path"] for a in response.json()["artifacts"]] == [f"last-{count}.txt"]
        return peak

    small, large = peak_for(5_000), peak_for(35_000)
    per_entry = (large - small) / 30_000
    # Remembering a TarInfo costs hundreds of bytes; a constant footprint costs ~0.
    assert per_entry < 50, f"{per_entry:.0f} bytes more per extra directory entry"


def _writes(monkeypatch) -> list[int]:
    """Counts the objects the batch opens for writing."""
    opened = []
    open_writer = storage.blob_writer_open

    def counting():
        opened.append(1)
        return open_writer()

    monkeypatch.setattr(storage, "blob_writer_open", counting)
    return opened


def test_files_the_project_already_holds_are_linked_without_being_written_again(
    api, project, build, store, monkeypatch
):
    kept, changed = os.urandom(2000), os.urandom(2000)
    assert post(api, build, files(("a", kept), ("b", b"old"))).status_code == 201
    before = set(store.objects())
    rebuild = make_build(project)
    opened = _writes(monkeypatch)

    body = files(("a", kept), ("b", changed), ("copy-of-a", kept), ("copy-of-b", changed))
    response = post(api, rebuild, body)

    assert response.status_code == 201, response.content
    assert [a["sha256"] for a in response.json()["artifacts"]] == [
        sha256(kept),
        sha256(changed),
        sha256(kept),
        sha256(changed),
    ]
    assert len(opened) == 1  # only the new bytes, once
    assert len(set(store.objects()) - before) == 1
    for path, data in [("a", kept), ("copy-of-a", kept), ("b", changed), ("copy-of-b", changed)]:
        assert download(api, rebuild.token, rebuild.build.pk, path).body == data


def test_bytes_only_another_project_holds_are_received_as_new_and_stored_once(
    api, build, store, monkeypatch
):
    data = os.urandom(2000)
    elsewhere = make_build(make_project(slug="elsewhere"))
    assert post(api, elsewhere, files(("a", data))).status_code == 201
    before = store.objects()
    opened = _writes(monkeypatch)

    response = post(api, build, files(("a", data)))

    assert response.status_code == 201
    assert len(opened) == 1  # written, as if nobody held them (nothing else is observable)
    assert store.objects() == before  # then found stored, and the copy dropped
    assert download(api, build.token, build.build.pk, "a").body == data


def test_more_small_files_than_one_group_are_all_stored(api, build, store, monkeypatch):
    monkeypatch.setattr(batch, "_ROWS_PER_STATEMENT", 3)
    pairs = [(f"f{i}", os.urandom(100)) for i in range(10)] + [("again", b"same"), ("a2", b"same")]

    response = post(api, build, files(*pairs))

    assert response.status_code == 201, response.content
    assert len(store.objects()) == 11
    for path, data in pairs:
        assert download(api, build.token, build.build.pk, path).body == data


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
@pytest.mark.parametrize("cut", [1536, 1536 + 100, 1536 + 511])
def test_an_archive_cut_at_or_in_a_header_is_refused(api, build, store, encoding, cut):
    # a: header 0-512, data and padding 512-1536; b's header from 1536: cut at the member's
    # boundary or inside its header, the archive has no end-of-archive blocks.
    body = files(("a", b"x" * 1000), ("b", b"y" * 1000))[:cut]

    response = post(api, build, COMPRESS[encoding](body), encoding=encoding)

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_archive"
    assert nothing_stored(build, store)


def test_a_member_whose_path_no_url_could_name_is_refused_with_nothing_stored(api, build, store):
    """A path reaching the service in a tar member, not a URL, is held to what a URL can carry:
    stored, it could never be downloaded."""
    body = files(("ok.txt", b"fine"), ("/".join(["字" * 100] * 4), b"unreachable"))
    response = post(api, build, body)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_path" and "URL" in response.json()["detail"]
    assert nothing_stored(build, store)
