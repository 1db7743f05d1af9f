"""indexers/h5lib (HDF5 through ctypes) agrees with h5py on what the reader asks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import numpy as np
import pytest

from indexers import h5lib
from indexers.reader import _h5py_links


def _write(path: Path) -> None:
    with h5py.File(path, "w", track_order=True) as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["fixed"] = np.bytes_(b"NXentry")
        entry.attrs["count"] = np.arange(3, dtype=">i4")
        entry.create_dataset("title", data="a title")
        entry.create_dataset("frames", shape=(2, 3), maxshape=(None, 3), dtype="<f4")
        entry.create_dataset("nothing", data=h5py.Empty("f8"))
        f["alias"] = f["entry"]  # a second hard link to the same group
        f["soft"] = h5py.SoftLink("/entry/title")
        for index in range(5):
            f.create_group(f"z{index}")


def test_the_ctypes_calls_agree_with_h5py(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    _write(path)
    fid = h5py.h5f.open(bytes(path), h5py.h5f.ACC_RDONLY)
    opened = [h5lib.open_object(fid.id, name) for name in (b"entry", b"alias", b"z0")]
    assert h5lib.open_object(fid.id, b"missing") is None
    try:
        (entry, is_group), (alias, _), (other, _) = opened  # type: ignore[misc]
        assert is_group
        assert h5lib.object_key(entry) == h5lib.object_key(alias) != h5lib.object_key(other)
        for index in (h5py.h5.INDEX_NAME, h5py.h5.INDEX_CRT_ORDER):
            ours = h5lib.list_links(fid.id, index, 100)
            theirs = _h5py_links(fid, index, 100)  # the reader's h5py way
            assert ours == theirs and len(ours) == 8
        assert len(h5lib.list_links(fid.id, h5py.h5.INDEX_NAME, 3)) == 3
        group = h5py.h5g.open(fid, b"entry")
        for name in (b"title", b"frames", b"nothing"):
            found = h5lib.open_object(entry, name)
            assert found is not None and not found[1]
            dataset = h5py.h5d.open(group, name)
            space = dataset.get_space()
            dims, maxdims, encoded = h5lib.dataset_space(found[0])
            assert dims == space.get_simple_extent_dims()
            if dims:
                assert maxdims == space.get_simple_extent_dims(True)
            assert encoded == dataset.get_type().encode()
            assert not h5lib.is_virtual(found[0], h5py.h5d.VIRTUAL)
            h5lib.close_object(found[0])
        assert h5lib.read_dataset_vlen_string(h5py.h5d.open(group, b"title").id) == b"a title"
        assert h5lib.has_attribute(entry, b"NX_class")
        assert not h5lib.has_attribute(entry, b"absent")
        with h5lib.Attribute(entry, b"NX_class") as attribute:
            assert attribute.read_vlen_string() == b"NXentry"
            assert attribute.dims() == ()
        with h5lib.Attribute(entry, b"count") as attribute:
            out = np.empty(attribute.dims() or (), dtype="<i4")
            memory = h5py.h5t.py_create(out.dtype)
            attribute.read_into(memory.id, out.ctypes.data)
            assert out.tolist() == [0, 1, 2]
    finally:
        for hid, _ in opened:  # type: ignore[misc]
            h5lib.close_object(hid)
    del group
    fid.close()
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == 0


def test_an_h5py_on_an_older_hdf5_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The structures the module hands HDF5 are those of 1.12 and later: on an older
    library it says so at import instead of reading memory wrongly."""
    monkeypatch.setattr(h5py.version, "hdf5_version_tuple", (1, 10, 8))
    monkeypatch.setattr(h5py.version, "hdf5_version", "1.10.8")
    spec = importlib.util.spec_from_file_location("h5lib_on_1_10", h5lib.__file__)
    assert spec is not None and spec.loader is not None
    with pytest.raises(ImportError, match=r"HDF5 >= 1\.12 .* built on HDF5 1\.10\.8"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
