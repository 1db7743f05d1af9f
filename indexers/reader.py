"""Reading HDF5 safely: the only module that talks to h5py directly.

Files are opened read-only with HDF5 file locking off, so an acquisition writing the
file is never blocked, and in SWMR-read mode when a SWMR writer has it open. Arrays
larger than ``max_array_bytes`` are never read; every object visited counts against
``max_objects`` and the deadline. h5py's exceptions (OSError, KeyError, RuntimeError,
ValueError, TypeError) are translated here into :class:`ExtractionError` or into
warnings on the object that failed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from catalogd.errors import ExtractionError
from indexers.base import Deadline, FileChanged, Probe
from indexers.normalise import name_text, to_json_value, to_text
from indexers.settings import IndexerSettings

#: Exceptions h5py raises for unreadable objects, links and attributes.
H5_ERRORS: tuple[type[Exception], ...] = (OSError, KeyError, RuntimeError, ValueError, TypeError)
#: At most this many warnings are kept per file.
MAX_WARNINGS = 50

_OPEN_FOR_WRITE = ("already open for write", "not already open for swmr")


class TooLarge(ValueError):
    """An array bigger than the configured bound: only its shape and dtype are known."""


class BudgetExceeded(ExtractionError):
    """More objects than ``max_objects``: the walk stops, the result is marked truncated."""


def open_hdf5(path: str) -> h5py.File:
    """Open ``path`` read-only without locking, falling back to SWMR-read mode."""
    try:
        return h5py.File(path, "r", locking=False)
    except FileNotFoundError:
        raise ExtractionError("the file vanished before it could be read") from None
    except PermissionError:
        raise ExtractionError("permission denied") from None
    except OSError as exc:
        message = str(exc)
        if not any(marker in message.lower() for marker in _OPEN_FOR_WRITE):
            raise ExtractionError(f"not a readable HDF5 file: {_h5_reason(message)}") from None
    try:
        return h5py.File(path, "r", locking=False, swmr=True)
    except OSError as exc:
        raise FileChanged(
            f"the file is open for writing by another program and not in SWMR mode "
            f"({_h5_reason(str(exc))})"
        ) from None


def _h5_reason(message: str) -> str:
    """h5py's message without its call-site prefix ("Unable to synchronously open file")."""
    if "(" in message and message.endswith(")"):
        inner = message[message.index("(") + 1 : -1]
        if inner:
            return inner
    return message


def nbytes(shape: tuple[int, ...] | None, itemsize: int) -> int:
    """Bytes an array would take (Python ints: absurd shapes do not overflow)."""
    if shape is None:
        return 0
    return math.prod(shape) * itemsize


def dtype_name(dtype: np.dtype[Any]) -> str:
    """A short, readable name for a dataset's type."""
    if h5py.check_string_dtype(dtype) is not None:
        return "string"
    if dtype.kind == "V":
        return "compound" if dtype.names else "opaque"
    if dtype.kind == "O":
        return "vlen" if h5py.check_vlen_dtype(dtype) is not None else "object"
    return dtype.name


def resolve_file(base: str, filename: str) -> str:
    """A linked file name resolved relative to the directory of the file holding the link."""
    if filename in (".", ""):
        return base
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(base)), filename))


class Reader:
    """One open file and the bounds on reading it. Use as a context manager."""

    def __init__(self, probe: Probe, settings: IndexerSettings, deadline: Deadline) -> None:
        self.path = probe.path
        self.settings = settings
        self.deadline = deadline
        self.warnings: list[str] = []
        self.visited = 0
        self.truncated = False
        self._nx_cache: dict[int, tuple[Any, str | None]] = {}
        self._external: dict[str, h5py.File | None] = {}
        self._members: dict[int, dict[str, Member]] = {}
        self.file = open_hdf5(probe.path)
        self.swmr = bool(self.file.swmr_mode)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._external.values():
            if handle is not None:
                _quiet_close(handle)
        self._external.clear()
        _quiet_close(self.file)

    # -- bookkeeping --------------------------------------------------------------------
    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)

    def tick(self) -> None:
        """Count one object against the bounds; raise when one runs out."""
        self.visited += 1
        if self.visited > self.settings.max_objects:
            self.truncated = True
            raise BudgetExceeded(f"more than {self.settings.max_objects} objects")
        if self.visited % 64 == 0:
            self.deadline.check()

    # -- objects -----------------------------------------------------------------------
    def children(self, group: h5py.Group) -> Iterator[tuple[str | bytes, Any]]:
        """(raw name, link) for each member, without opening it; links as h5py gives them."""
        for member in self.members(group).values():
            if member.link is not None:
                yield member.raw, member.link

    def members(self, group: h5py.Group) -> dict[str, Member]:
        """The group's members by name (as text), listed once per group and cached."""
        key = hash(group.id)
        cached = self._members.get(key)
        if cached is not None:
            return cached
        result: dict[str, Member] = {}
        try:
            names = list(group.keys())
        except H5_ERRORS as exc:
            self.warn(f"{self.where(group)}: members unreadable: {_h5_reason(str(exc))}")
            names = []
        try:
            for raw in names:
                self.tick()
                result[name_text(raw)] = Member(self, group, raw)
        except BudgetExceeded as exc:
            self.warn(f"{self.where(group)}: listing stopped after {len(result)} members: {exc}")
        self._members[key] = result
        return result

    def member(self, group: h5py.Group, name: str) -> Any:
        """The object ``name`` in ``group`` (links followed), or None."""
        found = self.members(group).get(name)
        return None if found is None else found.obj

    def open_member(self, group: h5py.Group, name: str | bytes, link: Any) -> Any:
        """The object a member names, following soft links and (when allowed) external
        ones, or None when it cannot be reached (dangling, missing file, unreadable)."""
        if isinstance(link, h5py.ExternalLink):
            return self.external_object(link.filename, link.path)
        try:
            raw = name if isinstance(name, bytes) else name.encode("utf-8")
            return _wrap(h5py.h5o.open(group.id, raw, lapl=_LAPL))
        except H5_ERRORS:
            return None

    def external_object(self, filename: str, path: str) -> Any:
        if not self.settings.follow_external_links:
            return None
        target = resolve_file(self.path, filename)
        if target not in self._external:
            handle: h5py.File | None
            try:
                handle = open_hdf5(target) if os.path.isfile(target) else None
            except ExtractionError as exc:
                self.warn(f"linked file {target}: {exc}")
                handle = None
            self._external[target] = handle
        handle = self._external[target]
        if handle is None:
            return None
        try:
            return handle[path]
        except H5_ERRORS:
            return None

    def attr(self, obj: Any, name: str) -> Any:
        """One attribute's raw value, or None when absent or unreadable."""
        try:
            return _read_attr(obj, name)
        except H5_ERRORS as exc:
            self.warn(f"{self.where(obj)}@{name}: {_h5_reason(str(exc))}")
            return None

    def nx_class(self, obj: Any) -> str | None:
        """The object's ``NX_class`` (any string storage), cached per object."""
        if not isinstance(obj, h5py.Group):
            return None
        cached = self._nx_cache.get(id(obj))
        if cached is None:
            # The object is kept with its class, so its id() cannot be reused meanwhile.
            cached = (obj, to_text(self.attr(obj, "NX_class")))
            self._nx_cache[id(obj)] = cached
        return cached[1]

    def attributes(self, obj: Any) -> tuple[dict[str, Any], int]:
        """Up to ``max_attributes`` attributes as JSON values, and how many there are."""
        try:
            count = int(h5py.h5o.get_info(obj.id).num_attrs)
        except H5_ERRORS:
            return {}, 0
        result: dict[str, Any] = {}
        if count == 0 or self.settings.max_attributes == 0:
            return result, count
        limit = self.settings.max_attributes
        names: list[bytes] = []

        def collect(name: bytes, *_: Any) -> bool | None:
            names.append(name)
            return True if len(names) >= limit else None  # a value stops the iteration

        try:
            # Native order: walking a dense attribute index in name order builds a table of
            # every attribute first (seconds for 100,000 of them).
            h5py.h5a.iterate(
                obj.id, collect, index_type=h5py.h5.INDEX_NAME, order=h5py.h5.ITER_NATIVE
            )
        except H5_ERRORS as exc:
            self.warn(f"{self.where(obj)}: attributes unreadable: {_h5_reason(str(exc))}")
            return result, count
        for name in names:
            self.deadline.check()
            try:
                info = h5py.h5a.open(obj.id, name)
                if nbytes(info.shape, info.dtype.itemsize) > self.settings.max_array_bytes:
                    result[name_text(name)] = None
                    continue
                value = to_json_value(obj.attrs[name])
            except H5_ERRORS as exc:
                self.warn(f"{self.where(obj)}@{name_text(name)}: {_h5_reason(str(exc))}")
                continue
            result[name_text(name)] = value
        return result, count

    def read(self, dataset: h5py.Dataset) -> Any:
        """A small dataset's value; TooLarge beyond ``max_array_bytes``; H5 errors pass."""
        dsid = dataset.id
        space = dsid.get_space()
        if space.get_simple_extent_type() == h5py.h5s.NULL:
            return None
        shape = space.shape
        dtype = dsid.dtype
        size = nbytes(shape, dtype.itemsize)
        if size > self.settings.max_array_bytes:
            raise TooLarge(
                f"{size} bytes (shape {list(shape)}) exceeds the {self.settings.max_array_bytes}"
                "-byte bound"
            )
        if dtype.kind in "biufSO" and dtype.names is None:
            # The low-level read: h5py's slicing machinery costs more than the read.
            out = np.empty(shape, dtype=dtype)
            dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
            return out if shape else out[()]
        return dataset[()]

    def where(self, obj: Any) -> str:
        try:
            name = obj.name
        except H5_ERRORS:
            name = None
        return name_text(name) if name else "?"


def _quiet_close(handle: h5py.File) -> None:
    try:
        handle.close()
    except H5_ERRORS:
        pass


class Member:
    """One member of a group: its link and object looked up at most once."""

    __slots__ = ("_reader", "_group", "raw", "_link", "_obj")

    def __init__(self, reader: Reader, group: h5py.Group, raw: str | bytes) -> None:
        self._reader = reader
        self._group = group
        self.raw = raw
        self._link: Any = _UNSET
        self._obj: Any = _UNSET

    @property
    def link(self) -> Any:
        """h5py's HardLink, SoftLink or ExternalLink, or None when unreadable."""
        if self._link is _UNSET:
            try:
                # Low level: faster, and h5py's high level fails on undecodable names.
                raw = self.raw if isinstance(self.raw, bytes) else self.raw.encode("utf-8")
                self._link = _low_level_link(self._group, raw)
            except H5_ERRORS as exc:
                where = f"{self._reader.where(self._group)}/{name_text(self.raw)}"
                self._reader.warn(f"{where}: {_h5_reason(str(exc))}")
                self._link = None
        return self._link

    @property
    def obj(self) -> Any:
        """The object, links followed; None when it cannot be reached."""
        if self._obj is _UNSET:
            link = self.link
            self._obj = (
                None if link is None else self._reader.open_member(self._group, self.raw, link)
            )
        return self._obj


_UNSET: Any = object()


def _read_attr(obj: Any, name: str) -> Any:
    """An attribute through the low-level API (a fraction of ``obj.attrs[name]``'s cost)."""
    oid = obj.id
    raw = name.encode()
    if not h5py.h5a.exists(oid, raw):
        return None
    aid = h5py.h5a.open(oid, raw)
    space = aid.get_space()
    if space.get_simple_extent_type() == h5py.h5s.NULL:
        return None
    dtype = aid.dtype
    if dtype.kind not in "biufSO" or dtype.names is not None:
        return obj.attrs[name]
    out = np.empty(space.shape, dtype=dtype)
    aid.read(out)
    return out


#: The default link access properties (h5o.open wants them for soft links).
_LAPL: Any = None


def _low_level_link(group: h5py.Group, raw: bytes) -> Any:
    """The link named by undecodable bytes, through h5py's low-level API."""
    info = group.id.links.get_info(raw)
    if info.type == h5py.h5l.TYPE_SOFT:
        return h5py.SoftLink(name_text(group.id.links.get_val(raw)))
    if info.type == h5py.h5l.TYPE_EXTERNAL:
        filename, path = group.id.links.get_val(raw)
        return h5py.ExternalLink(os.fsdecode(filename), name_text(path))
    return h5py.HardLink()


def _wrap(oid: Any) -> Any:
    if isinstance(oid, h5py.h5g.GroupID):
        return h5py.Group(oid)
    if isinstance(oid, h5py.h5d.DatasetID):
        return h5py.Dataset(oid)
    return None
