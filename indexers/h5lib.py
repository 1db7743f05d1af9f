"""The few HDF5 calls the reader makes most, straight into the HDF5 library h5py uses.

h5py wraps every identifier it returns in a Python object registered in a weak-value
dictionary (``h5py._objects.registry``), which costs more than the HDF5 call itself on a
small file: opening a dataset and asking its shape and type makes three of them. The
functions here call the same library (found through h5py's own extension module, so
they share its state, its identifiers and its silenced error stack) by ``ctypes`` and
deal in plain integer identifiers, under h5py's lock (``phil``) as h5py's own calls are.
Failures raise :class:`OSError`, as h5py's do. The caller owns what :func:`open_object`
returns and closes it with :func:`close_object`; :func:`wrap` gives h5py's object for
an identifier when h5py's own machinery is wanted (a value read, a rare type).
"""

from __future__ import annotations

import ctypes
from typing import Any

import h5py
from h5py._objects import phil

_lib = ctypes.PyDLL(h5py.defs.__file__)  # its symbols come from h5py's libhdf5
_hid = ctypes.c_int64
_int = ctypes.c_int
_hsize = ctypes.c_uint64
_DEFAULT = 0  # H5P_DEFAULT
#: HDF5's "undefined address" (``H5Dget_offset`` of storage that is not contiguous).
_HADDR_UNDEF = 2**64 - 1
#: Rank of the largest dataspace (H5S_MAX_RANK).
_MAX_RANK = 32
_GROUP: int = h5py.h5i.GROUP
_DATASET: int = h5py.h5i.DATASET
_NULL_SPACE: int = h5py.h5s.NULL
#: Bytes of a type's encoding tried first (the common types take 20-40).
_ENCODE_GUESS = 64


def _bind(name: str, restype: Any, *argtypes: Any) -> Any:
    function = getattr(_lib, name)
    function.restype = restype
    function.argtypes = argtypes
    return function


_H5Oopen = _bind("H5Oopen", _hid, _hid, ctypes.c_char_p, _hid)
_H5Oclose = _bind("H5Oclose", _int, _hid)
_H5Iget_type = _bind("H5Iget_type", _int, _hid)
_H5Iinc_ref = _bind("H5Iinc_ref", _int, _hid)
_H5Dget_space = _bind("H5Dget_space", _hid, _hid)
_H5Dget_type = _bind("H5Dget_type", _hid, _hid)
_H5Dget_offset = _bind("H5Dget_offset", ctypes.c_uint64, _hid)
_H5Dget_create_plist = _bind("H5Dget_create_plist", _hid, _hid)
_H5Pget_layout = _bind("H5Pget_layout", _int, _hid)
_H5Pclose = _bind("H5Pclose", _int, _hid)
_H5Sget_simple_extent_type = _bind("H5Sget_simple_extent_type", _int, _hid)
_H5Sget_simple_extent_dims = _bind(
    "H5Sget_simple_extent_dims", _int, _hid, ctypes.c_void_p, ctypes.c_void_p
)
_H5Sclose = _bind("H5Sclose", _int, _hid)
_H5Tencode = _bind("H5Tencode", _int, _hid, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t))
_H5Tclose = _bind("H5Tclose", _int, _hid)
_H5Aexists = _bind("H5Aexists", _int, _hid, ctypes.c_char_p)

_dims = (_hsize * _MAX_RANK)()
_maxdims = (_hsize * _MAX_RANK)()
_encoded = ctypes.create_string_buffer(_ENCODE_GUESS)
_encoded_size = ctypes.c_size_t()


def open_object(location: int, name: bytes) -> tuple[int, bool] | None:
    """``(identifier, is_group)`` of the group or dataset ``name`` names from the
    location (a hard link: HDF5 follows what the name says); None when unreachable or
    neither (a named datatype)."""
    with phil:
        oid = _H5Oopen(location, name, _DEFAULT)
        if oid < 0:
            return None
        kind = _H5Iget_type(oid)
        if kind == _GROUP or kind == _DATASET:
            return oid, kind == _GROUP
        _H5Oclose(oid)
    return None


def close_object(oid: int) -> None:
    with phil:
        _H5Oclose(oid)


def wrap(oid: int, is_group: bool) -> Any:
    """h5py's object for an identifier, holding a reference of its own."""
    with phil:
        if _H5Iinc_ref(oid) < 0:
            raise OSError(f"identifier {oid}: not valid")
    return h5py.h5g.GroupID(oid) if is_group else h5py.h5d.DatasetID(oid)


def dataset_space(
    dataset: int,
) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None, bytes | None]:
    """(dims, maxdims, type encoding) of a dataset: dims and maxdims None for a null
    dataspace, () for a scalar one; the encoding None where HDF5 cannot encode the type
    (h5py's ``get_space().get_simple_extent_dims()`` and ``get_type().encode()``)."""
    with phil:
        space = _H5Dget_space(dataset)
        if space < 0:
            raise OSError("unable to get the dataspace")
        try:
            if _H5Sget_simple_extent_type(space) == _NULL_SPACE:
                dims = maxdims = None
            else:
                rank = _H5Sget_simple_extent_dims(space, _dims, _maxdims)
                if rank < 0:
                    raise OSError("unable to get the dataspace's extent")
                dims = tuple(_dims[:rank])
                maxdims = tuple(_maxdims[:rank])
        finally:
            _H5Sclose(space)
        dtype = _H5Dget_type(dataset)
        if dtype < 0:
            raise OSError("unable to get the datatype")
        try:
            return dims, maxdims, _encode(dtype)
        finally:
            _H5Tclose(dtype)


def _encode(dtype: int) -> bytes | None:
    size = _encoded_size
    size.value = _ENCODE_GUESS
    if _H5Tencode(dtype, _encoded, ctypes.byref(size)) < 0:
        return None
    if size.value <= _ENCODE_GUESS:
        return _encoded.raw[: size.value]
    buffer = ctypes.create_string_buffer(size.value)
    if _H5Tencode(dtype, buffer, ctypes.byref(size)) < 0:
        return None
    return buffer.raw[: size.value]


def is_virtual(dataset: int, virtual_layout: int) -> bool:
    """Whether the dataset's layout is ``virtual_layout`` (contiguous storage, whose
    address HDF5 knows, is not)."""
    with phil:
        if _H5Dget_offset(dataset) != _HADDR_UNDEF:
            return False
        plist = _H5Dget_create_plist(dataset)
        if plist < 0:
            raise OSError("unable to get the dataset's creation properties")
        try:
            layout: int = _H5Pget_layout(plist)
            return layout == virtual_layout
        finally:
            _H5Pclose(plist)


def has_attribute(oid: int, name: bytes) -> bool:
    """Whether the object has the attribute (h5py's ``h5a.exists``)."""
    with phil:
        found: int = _H5Aexists(oid, name)
    if found < 0:
        raise OSError("unable to tell whether the attribute exists")
    return found > 0
