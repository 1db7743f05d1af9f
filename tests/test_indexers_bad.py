"""Bad input: never a traceback, always a result with a clear error (or kind other)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import nexus_shapes as shapes
import pytest
from conftest import as_nobody

from indexers.base import ExtractResult
from indexers.hdf5 import Hdf5Indexer
from indexers.nexus import NexusIndexer
from indexers.registry import Registry
from indexers.settings import IndexerSettings


@pytest.fixture
def registry() -> Iterator[Registry]:
    with Registry(
        [NexusIndexer(), Hdf5Indexer()], settings=IndexerSettings(isolation="inline")
    ) as reg:
        yield reg


def extract(registry: Registry, path: Path | str) -> ExtractResult:
    result = registry.extract(str(path))
    json.dumps(result.to_json(), ensure_ascii=False).encode("utf-8")
    return result


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.nxs"
    shapes.write_gda_scan(path, entries=2)
    return path


def test_zero_byte_with_hdf5_suffix(registry: Registry, tmp_path: Path) -> None:
    result = extract(registry, shapes.write_bytes(tmp_path / "empty.h5", b""))
    assert not result.ok and result.kind == "other"
    assert result.error == "not an HDF5 file despite the suffix .h5: an empty file (0 bytes)"


def test_zero_byte_other_suffix_is_just_other(registry: Registry, tmp_path: Path) -> None:
    result = extract(registry, shapes.write_bytes(tmp_path / "empty.log", b""))
    assert result.ok and result.kind == "other" and result.error is None


def test_hdf4_with_hdf5_suffix(registry: Registry, tmp_path: Path) -> None:
    result = extract(registry, shapes.write_hdf4_like(tmp_path / "old.h5"))
    assert not result.ok and result.kind == "other"
    assert result.error is not None and "HDF4" in result.error
    assert result.metadata["format"] == "hdf4"


def test_hdf4_with_its_own_suffix(registry: Registry, tmp_path: Path) -> None:
    result = extract(registry, shapes.write_hdf4_like(tmp_path / "old.hdf4"))
    assert result.ok and result.kind == "other" and result.metadata["format"] == "hdf4"


@pytest.mark.parametrize(
    ("name", "ok"), [("data.nc", True), ("data.h5", False), ("data.nxs", False)]
)
def test_netcdf3(registry: Registry, tmp_path: Path, name: str, ok: bool) -> None:
    result = extract(registry, shapes.write_netcdf3(tmp_path / name))
    assert result.ok is ok and result.kind == "other"
    assert result.metadata["format"] == "netcdf3"
    if not ok:
        assert result.error is not None and "netCDF-3" in result.error


def test_text_file_named_nxs(registry: Registry, tmp_path: Path) -> None:
    result = extract(registry, shapes.write_bytes(tmp_path / "notes.nxs", b"hello\n" * 300))
    assert not result.ok
    assert result.error is not None and "no HDF5 signature" in result.error


@pytest.mark.parametrize("keep", [0.01, 0.3, 0.9])
def test_truncated(registry: Registry, tmp_path: Path, good_file: Path, keep: float) -> None:
    path = shapes.write_truncated(tmp_path / "cut.nxs", good_file, keep=keep)
    result = extract(registry, path)
    assert not result.ok
    assert result.error is not None and result.error.startswith("not a readable HDF5 file")
    assert "truncated" in result.error or "signature" in result.error


@pytest.mark.parametrize("seed", range(6))
def test_corrupted(registry: Registry, tmp_path: Path, good_file: Path, seed: int) -> None:
    path = shapes.write_corrupted(tmp_path / "noise.nxs", good_file, seed=seed)
    result = extract(registry, path)
    if result.ok:  # what survives is reported; what does not is a warning
        assert result.kind in ("hdf5", "nexus")
    else:
        assert result.error


def test_corrupted_inside_an_object(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "partly.nxs"
    shapes.write_gda_scan(path, entries=1)
    with h5py.File(path, "r") as f:
        offset = (
            f["entry1/sample"].id.get_offset()
            if hasattr(f["entry1/sample"].id, "get_offset")
            else None
        )
        header = h5py.h5o.get_info(f["entry1/sample"].id).addr if offset is None else offset
    with open(path, "r+b") as handle:
        handle.seek(header)
        handle.write(b"\xff" * 64)
    result = extract(registry, path)
    if result.ok:
        entry = result.entries[0]
        assert entry["title"] == "i22 scan 12345 part 1"
        assert result.metadata.get("warnings")
    else:
        assert result.error


def test_directory_and_missing(registry: Registry, tmp_path: Path) -> None:
    assert extract(registry, tmp_path).error == f"{tmp_path}: not a regular file"
    missing = extract(registry, tmp_path / "nope.h5")
    assert not missing.ok and missing.error == "no such file"


def test_unreadable(registry: Registry, public_tmp: Path, good_file: Path) -> None:
    unreadable = public_tmp / good_file.name
    shutil.copyfile(good_file, unreadable)
    unreadable.chmod(0)
    if os.geteuid() != 0:
        result = extract(registry, unreadable)
        assert not result.ok and result.error is not None and "ermission" in result.error
        return
    # Root reads everything: ask as an unprivileged user, through the command.
    catalogd = str(Path(sys.executable).with_name("catalogd"))
    done = as_nobody(catalogd, "extract", str(unreadable))
    assert done.returncode == 1, done.stderr
    [line] = done.stdout.splitlines()
    record = json.loads(line)
    assert record["ok"] is False and "ermission" in record["error"]


def test_hundred_thousand_attributes(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "attrs.h5"
    shapes.write_many_attributes(path, count=100_000)
    result = extract(registry, path)
    assert result.ok and result.entries[0]["title"] == "many attributes"
    structure = result.metadata["structure"]
    assert structure["root_attribute_count"] == 100_000
    assert len(structure["root_attributes"]) == IndexerSettings().max_attributes
    assert result.elapsed_s < 2.0


def test_absurd_shapes(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "absurd.nxs"
    shapes.write_absurd_shapes(path)
    result = extract(registry, path)
    assert result.ok
    entry = result.entries[0]
    assert entry["title"] == "absurd"
    assert entry["sample"]["name"] is None
    by_path = {o["path"]: o for o in result.metadata["structure"]["objects"]}
    assert by_path["/entry/huge"]["shape"] == [2**31, 2**31, 2**20]
    assert by_path["/entry/null"]["shape"] is None


def test_non_utf8_names_and_values(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "latin1.nxs"
    shapes.write_non_utf8(path)
    result = extract(registry, path)
    assert result.ok
    entry = result.entries[0]
    assert entry["title"] == "Température 25 °C"
    assert entry["sample"]["name"] == "café"
    attrs = result.metadata["structure"]["root_attributes"]
    assert attrs["bad_utf8"] == "abÿþ"
    assert attrs["néme"] == "x"
    paths = [o["path"] for o in result.metadata["structure"]["objects"]]
    assert "/entry/sample/grün" in paths


def test_non_utf8_file_name(registry: Registry, tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/scan\xff.nxs"
    shapes.write_gda_scan(os.fsdecode(raw), entries=1)
    result = extract(registry, os.fsdecode(raw))
    assert result.ok
    assert result.to_json()["path"].endswith("scan\\xff.nxs")


def test_every_bad_file_gives_a_json_line(
    registry: Registry, tmp_path: Path, good_file: Path
) -> None:
    paths = [
        shapes.write_bytes(tmp_path / "a.h5", b""),
        shapes.write_bytes(tmp_path / "b.h5", b"\x89HDF\r\n\x1a\n"),
        shapes.write_bytes(tmp_path / "c.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 4096),
        shapes.write_bytes(tmp_path / "d.h5", b"\x89HDF\r\n\x1a\n" + os.urandom(4096)),
        shapes.write_truncated(tmp_path / "e.nxs", good_file, keep=0.5),
    ]
    for path in paths:
        result = extract(registry, path)
        assert not result.ok and result.error
        assert "Traceback" not in result.error
