"""A pack tree sent in a request body (``POST /api/v1/packs``): ``pack_files.bundle`` reads
what a load reads, ``unpack`` lays out only pack files' paths under its root, never
anywhere else, whatever the body says."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import InvalidPack
from policies import pack_files


def test_a_bundle_unpacks_to_the_same_tree(tmp_path: Path) -> None:
    pack = tmp_path / "here" / "shop"
    (pack / "actions").mkdir(parents=True)
    (pack / "pack.yaml").write_text("name: shop\n")
    (pack / "actions" / "a.yaml").write_text("name: a\nrunner: noop\n")
    (pack / "notes.txt").write_text("not a pack file")
    files, origins = pack_files.bundle(pack)
    assert files == {
        "shop/pack.yaml": "name: shop\n",
        "shop/actions/a.yaml": "name: a\nrunner: noop\n",
    }
    assert origins == {"shop": pack}
    out = tmp_path / "out"
    out.mkdir()
    pack_files.unpack(files, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.yaml")) == [
        "shop/actions/a.yaml",
        "shop/pack.yaml",
    ]
    message = "shop/actions/a.yaml:2: runner: bad"
    assert pack_files.here(message, origins) == f"{pack}/actions/a.yaml:2: runner: bad"


@pytest.mark.parametrize(
    "path",
    [
        "../escape/pack.yaml",
        "shop/../../etc/pack.yaml",
        "/etc/passwd",
        "shop/actions/../../x.yaml",
        ".hidden/pack.yaml",
        "shop/.ssh/x.yaml",
        "shop/actions/deeper/x.yaml",
        "shop/secrets/x.yaml",
        "shop/actions/x.sh",
        "shop/other.yaml",
        "shop\\..\\pack.yaml",
        "",
    ],
)
def test_no_other_path_is_written(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(InvalidPack, match="is not a pack file's path"):
        pack_files.unpack({path: "name: x\n"}, root)
    assert list(tmp_path.rglob("*")) == [root]  # nothing written, here or above


def test_sizes_and_counts_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(InvalidPack, match="larger than 1 MiB"):
        pack_files.unpack({"shop/pack.yaml": "x" * (pack_files.MAX_FILE_BYTES + 1)}, tmp_path)
    many = {f"shop/actions/a{i}.yaml": "" for i in range(pack_files.MAX_BUNDLE_FILES + 1)}
    with pytest.raises(InvalidPack, match="at most 1000"):
        pack_files.unpack(many, tmp_path)


def test_a_lone_surrogate_is_refused_as_not_utf8_when_loaded(tmp_path: Path) -> None:
    pack_files.unpack({"shop/pack.yaml": "name: \ud800\n"}, tmp_path)
    with pytest.raises(InvalidPack, match="not UTF-8"):
        pack_files.parse(
            tmp_path / "shop" / "pack.yaml", (tmp_path / "shop" / "pack.yaml").read_bytes()
        )
