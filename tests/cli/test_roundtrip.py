"""Upload a tree with `courier upload`, download it into an empty directory, compare."""

import os
from pathlib import Path

import pytest

from .conftest import courier

pytestmark = pytest.mark.slow


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.bin": os.urandom(3 * 1024 * 1024 + 5),
        "empty.txt": b"",
        "nested/deeper/b.txt": os.urandom(1000),
        "nested/with space ü.txt": "grüße\n".encode(),
        **{f"many/f{i:02}.dat": os.urandom(100 + i) for i in range(12)},
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_tree_uploaded_and_downloaded_is_identical(started, tmp_path):
    files = make_tree(tmp_path / "src")
    up = courier("upload", str(tmp_path / "src"), "--prefix", "dist/", env=started)
    assert up.code == 0, up.output
    out = tmp_path / "out"
    down = courier("download", "--build", started["COURIER_BUILD"], "-o", str(out), env=started)
    assert down.code == 0, down.output
    assert tree(out) == {f"dist/{rel}": data for rel, data in files.items()}
