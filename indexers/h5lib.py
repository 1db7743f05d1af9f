"""The few HDF5 calls the reader makes most, straight into the HDF5 library h5py uses.

h5py wraps every identifier it returns in a Python object registered in a weak-value
dictionary (``h5py._objects.registry``), which costs more than the HDF5 call itself on a
small file: opening a dataset and asking its shape and type makes three of them. The
functions here call the same library (found through h5py's own extension module, so
they share its state, its identifiers and its silenced error stack) by ``ctypes`` and
deal in plain integer identifiers, under h5py's lock (``phil``) as h5py's own calls are.
Failures raise :class:`Failed`. The caller owns what :func:`open_object`
returns and closes it with :func:`close_object`; :func:`wrap` gives h5py's object for
an identifier when h5py's own machinery is wanted (a value read, a rare type).
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

import h5py
from h5py._objects import phil

#: The oldest HDF5 whose calls and structures (``H5Oget_info3``, ``H5Literate2``, object
#: tokens) this module uses.
OLDEST_HDF5 = (1, 12, 0)
if h5py.version.hdf5_version_tuple < OLDEST_HDF5:  # an h5py built on an older HDF5
    raise ImportError(
        f"catalogd's HDF5 reader needs h5py built on HDF5 >= 1.12 (h5py's wheels from PyPI "
        f"are); this h5py {h5py.version.version} is built on HDF5 {h5py.version.hdf5_version}"
    )
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
_ITER_INC: int = h5py.h5.ITER_INC
#: Bytes of a type's encoding kept room for (the common types take 14-40).
_ENCODE_GUESS = 64


class Failed(OSError):
    """An HDF5 call failed: the caller asks h5py the same, for h5py's own outcome and
    message (the warnings a file gets are the same whichever way it was read)."""


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
            raise Failed(f"identifier {oid}: not valid")
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
            raise Failed("unable to get the dataspace")
        try:
            if _H5Sget_simple_extent_type(space) == _NULL_SPACE:
                dims = maxdims = None
            else:
                rank = _H5Sget_simple_extent_dims(space, _dims, _maxdims)
                if rank < 0:
                    raise Failed("unable to get the dataspace's extent")
                dims = tuple(_dims[:rank])
                maxdims = tuple(_maxdims[:rank])
        finally:
            _H5Sclose(space)
        dtype = _H5Dget_type(dataset)
        if dtype < 0:
            raise Failed("unable to get the datatype")
        try:
            return dims, maxdims, _encode(dtype)
        finally:
            _H5Tclose(dtype)


def _encode(dtype: int) -> bytes | None:
    """HDF5's encoding of a type (h5py's ``TypeID.encode()``); None where it has none."""
    size = _encoded_size
    size.value = 0
    if _H5Tencode(dtype, None, ctypes.byref(size)) < 0:  # its size first
        return None
    buffer = _encoded if size.value <= _ENCODE_GUESS else ctypes.create_string_buffer(size.value)
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
            raise Failed("unable to get the dataset's creation properties")
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
        raise Failed("unable to tell whether the attribute exists")
    return found > 0


_H5Aopen = _bind("H5Aopen", _hid, _hid, ctypes.c_char_p, _hid)
_H5Aclose = _bind("H5Aclose", _int, _hid)
_H5Aget_type = _bind("H5Aget_type", _hid, _hid)
_H5Aget_space = _bind("H5Aget_space", _hid, _hid)
_H5Aget_storage_size = _bind("H5Aget_storage_size", _hsize, _hid)
_H5Aread = _bind("H5Aread", _int, _hid, _hid, ctypes.c_void_p)
_H5Tget_cset = _bind("H5Tget_cset", _int, _hid)
_H5Tcopy = _bind("H5Tcopy", _hid, _hid)
_H5Tset_size = _bind("H5Tset_size", _int, _hid, ctypes.c_size_t)
_H5Tset_cset = _bind("H5Tset_cset", _int, _hid, _int)
_H5free_memory = _bind("H5free_memory", _int, ctypes.c_void_p)
_H5Dread = _bind("H5Dread", _int, _hid, _hid, _hid, _hid, _hid, ctypes.c_void_p)
_ALL = 0  # H5S_ALL
_H5T_VARIABLE = 2**64 - 1  # (size_t)-1
#: Memory types of one variable-length C string, by character set (made once).
_vlen_strings: dict[int, int] = {}


class Attribute:
    """One open attribute: its type's encoding, storage size and (when asked) extent;
    closed on leaving the ``with`` block."""

    __slots__ = ("aid", "tid")

    def __init__(self, oid: int, name: bytes) -> None:
        with phil:
            self.aid = _H5Aopen(oid, name, _DEFAULT)
            if self.aid < 0:
                raise Failed("unable to open the attribute")
            self.tid = _H5Aget_type(self.aid)
        if self.tid < 0:
            self.close()
            raise Failed("unable to get the attribute's type")

    def __enter__(self) -> Attribute:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with phil:
            if self.tid >= 0:
                _H5Tclose(self.tid)
            _H5Aclose(self.aid)

    def encoded_type(self) -> bytes | None:
        with phil:
            return _encode(self.tid)

    def storage_size(self) -> int:
        with phil:
            size: int = _H5Aget_storage_size(self.aid)
        return size

    def dims(self) -> tuple[int, ...] | None:
        """The extent: None for a null dataspace, () for a scalar one."""
        with phil:
            space = _H5Aget_space(self.aid)
            if space < 0:
                raise Failed("unable to get the attribute's dataspace")
            try:
                if _H5Sget_simple_extent_type(space) == _NULL_SPACE:
                    return None
                rank = _H5Sget_simple_extent_dims(space, _dims, None)
                if rank < 0:
                    raise Failed("unable to get the attribute's extent")
                return tuple(_dims[:rank])
            finally:
                _H5Sclose(space)

    def read_into(self, memory_type: int, address: int) -> None:
        """HDF5's own read (and conversion) into memory at ``address``."""
        with phil:
            if _H5Aread(self.aid, memory_type, address) < 0:
                raise Failed("unable to read the attribute")

    def read_vlen_string(self) -> bytes:
        """One variable-length string, as its bytes (a null string: empty)."""
        with phil:
            pointer = ctypes.c_void_p()
            if _H5Aread(self.aid, _vlen_string(self.tid), ctypes.byref(pointer)) < 0:
                raise Failed("unable to read the attribute")
            return _taken(pointer)


def read_dataset(dataset: int, memory_type: int, address: int) -> None:
    """HDF5's own read (and conversion) of a whole dataset into memory at ``address``."""
    with phil:
        if _H5Dread(dataset, memory_type, _ALL, _ALL, _DEFAULT, address) < 0:
            raise Failed("unable to read the dataset")


def read_dataset_vlen_string(dataset: int) -> bytes:
    """The one variable-length string of a dataset of one element, as its bytes."""
    with phil:
        dtype = _H5Dget_type(dataset)
        if dtype < 0:
            raise Failed("unable to get the datatype")
        try:
            memory = _vlen_string(dtype)
        finally:
            _H5Tclose(dtype)
        pointer = ctypes.c_void_p()
        if _H5Dread(dataset, memory, _ALL, _ALL, _DEFAULT, ctypes.byref(pointer)) < 0:
            raise Failed("unable to read the dataset")
        return _taken(pointer)


def _vlen_string(stored: int) -> int:
    """The memory type of one variable-length C string in the character set of the
    stored type (HDF5 converts no string between character sets), made once."""
    cset = _H5Tget_cset(stored)
    memory = _vlen_strings.get(cset)
    if memory is None:
        memory = _H5Tcopy(_c_string())
        if memory < 0:
            raise Failed("unable to make a string type")
        if _H5Tset_size(memory, _H5T_VARIABLE) < 0 or _H5Tset_cset(memory, cset) < 0:
            _H5Tclose(memory)
            raise Failed("unable to make a string type")
        _vlen_strings[cset] = memory
    return memory


def _taken(pointer: ctypes.c_void_p) -> bytes:
    """The bytes of a C string HDF5 allocated, which is then freed (None: empty)."""
    if not pointer.value:
        return b""
    try:
        return ctypes.string_at(pointer.value)
    finally:
        _H5free_memory(pointer.value)


def _c_string() -> int:
    """HDF5's predefined C string type (a library global, valid once HDF5 is open)."""
    value: int = _hid.in_dll(_lib, "H5T_C_S1_g").value
    return value


#: (name, link type, whether the creation order is tracked, creation order) of a link.
LinkRow = tuple[bytes, int, bool, int]
_LINK_INFO = struct.Struct("=i?xxxq")  # H5L_info2_t: type, corder_valid, corder
_link_rows: list[LinkRow] = []
_link_room = [0]


def _collect(_group: int, name: bytes, info: int, _data: Any) -> int:
    kind, tracked, order = _LINK_INFO.unpack(ctypes.string_at(info, _LINK_INFO.size))
    _link_rows.append((name, kind, tracked, order))
    return 1 if len(_link_rows) >= _link_room[0] else 0  # positive: stop, no error


_ITERATE = ctypes.CFUNCTYPE(_int, _hid, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p)
_collector = _ITERATE(_collect)
_H5Literate2 = _bind(
    "H5Literate2", _int, _hid, _int, _int, ctypes.POINTER(_hsize), _ITERATE, ctypes.c_void_p
)
_H5Oget_info3 = _bind("H5Oget_info3", _int, _hid, ctypes.c_void_p, ctypes.c_uint)
_H5O_INFO_BASIC = 1
#: H5O_info2_t: fileno (unsigned long), token (16 bytes), then its type, reference count,
#: four times and attribute count (72 bytes in HDF5 1.12-2.0): room to spare, as HDF5
#: writes the whole structure.
_object_info = ctypes.create_string_buffer(512)
_OBJECT_KEY = ctypes.sizeof(ctypes.c_ulong) + 16


def list_links(group: int, index: int, room: int) -> list[LinkRow]:
    """The first ``room`` links of a group in the order of the index (``h5.INDEX_NAME``
    or ``h5.INDEX_CRT_ORDER``), in increasing order (h5py's ``links.iterate``)."""
    with phil:
        rows: list[LinkRow] = []
        _link_rows.clear()
        _link_room[0] = room
        try:
            if _H5Literate2(group, index, _ITER_INC, None, _collector, None) < 0:
                raise Failed("unable to iterate over the links")
            rows.extend(_link_rows)
        finally:
            _link_rows.clear()
    return rows


def object_key(oid: int) -> bytes:
    """The object's identity: its file's number and its token in that file (what h5py
    hashes an identifier by)."""
    with phil:
        if _H5Oget_info3(oid, _object_info, _H5O_INFO_BASIC) < 0:
            raise Failed("unable to get the object's info")
        return _object_info.raw[:_OBJECT_KEY]
