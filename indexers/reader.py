"""Reading HDF5 safely, and each object once: the only module (with :mod:`indexers.h5lib`,
its direct calls into h5py's HDF5 library) that talks to h5py.

Files are opened read-only with HDF5 file locking off, so an acquisition writing the
file is never blocked, and in SWMR-read mode when a SWMR writer has it open. Arrays
larger than ``max_array_bytes`` are never read; every link listed counts against
``max_objects`` and the deadline. h5py's exceptions (OSError, KeyError, RuntimeError,
ValueError, TypeError) are translated here into :class:`ExtractionError` or into
warnings on the object that failed.

Files are opened with h5py's low-level API; the objects in them are opened, listed,
shaped, typed and their attributes and small values read through :mod:`indexers.h5lib`
as plain HDF5 identifiers, without h5py's object (and weak reference in its registry)
for each object, dataspace, type and attribute, which cost more than the HDF5 calls
themselves on a small file. h5py's own calls (``h5a``, ``h5d``, ``h5l``, a node's
:attr:`Node.oid`) read what its conversions make (variable-length values other than
one string, compound types) and redo any call of :mod:`indexers.h5lib` that fails, so
a value or a warning's message is the one h5py gives. A :class:`Reader` is an
in-memory index of the file that fills as it is asked: each group's links are listed
once (:meth:`Reader.listing`), each link's object opened once (:meth:`Reader.target`),
each dataset's shape and type and each group's ``NX_class`` read once. The NeXus
extraction, the site mappings and the structure summary all read through the same
reader, so the second and third of them find the file already indexed.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from catalogd.errors import ExtractionError
from catalogd.layout import relative_parts
from indexers import h5lib
from indexers.base import Deadline, FileChanged
from indexers.normalise import name_text, to_text
from indexers.settings import IndexerSettings

#: Exceptions h5py raises for unreadable objects, links and attributes.
H5_ERRORS: tuple[type[Exception], ...] = (OSError, KeyError, RuntimeError, ValueError, TypeError)
#: At most this many warnings are kept per file.
MAX_WARNINGS = 50

#: Link kinds (:attr:`Link.kind`).
HARD = "hard"
SOFT = "soft"
EXTERNAL = "external"

_OPEN_FOR_WRITE = ("already open for write", "not already open for swmr")
_TYPE_HARD: int = h5py.h5l.TYPE_HARD
_TYPE_SOFT: int = h5py.h5l.TYPE_SOFT
_TYPE_EXTERNAL: int = h5py.h5l.TYPE_EXTERNAL
#: Soft and external links followed in a row before giving up (HDF5's H5L_NUM_LINKS).
MAX_LINK_HOPS = 16
_NULL_SPACE: int = h5py.h5s.NULL
_VIRTUAL_LAYOUT: int = h5py.h5d.VIRTUAL
_INDEX_NAME: int = h5py.h5.INDEX_NAME
_INDEX_CRT_ORDER: int = h5py.h5.INDEX_CRT_ORDER
_ITER_NATIVE: int = h5py.h5.ITER_NATIVE
_ALL: Any = h5py.h5s.ALL
#: Bytes one variable-length element takes in a file (length, heap address, index;
#: 8-byte addresses), whatever its length: a string's storage size says how many.
_VLEN_IN_FILE = 16
_UNSET: Any = object()


class TooLarge(ValueError):
    """An array bigger than the configured bound: only its shape and dtype are known."""


class BudgetExceeded(ExtractionError):
    """More objects than ``max_objects``: the walk stops, the result is marked truncated."""


_fapl_cache: list[Any] = []


def _fapl() -> Any:
    """File access properties as ``h5py.File(path, "r", locking=False)`` makes them."""
    if not _fapl_cache:
        fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
        fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
        fapl.set_file_locking(False, ignore_when_disabled=False)
        _fapl_cache.append(fapl)
    return _fapl_cache[0]


def open_file(path: str) -> tuple[Any, bool]:
    """Open ``path`` read-only without locking, falling back to SWMR-read mode.

    Returns h5py's low-level ``FileID`` and whether SWMR-read mode was needed.
    """
    raw = os.fsencode(path)
    try:
        return h5py.h5f.open(raw, h5py.h5f.ACC_RDONLY, fapl=_fapl()), False
    except FileNotFoundError:
        raise ExtractionError("the file vanished before it could be read") from None
    except PermissionError:
        raise ExtractionError("permission denied") from None
    except H5_ERRORS as exc:
        message = str(exc)
        if not any(marker in message.lower() for marker in _OPEN_FOR_WRITE):
            raise ExtractionError(f"not a readable HDF5 file: {_h5_reason(message)}") from None
    try:
        flags = h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ
        return h5py.h5f.open(raw, flags, fapl=_fapl()), True
    except H5_ERRORS as exc:
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


_NUMBER_NAMES: dict[np.dtype[Any], str] = {}


def dtype_name(dtype: np.dtype[Any]) -> str:
    """A short, readable name for a dataset's type."""
    if dtype.metadata is None and dtype.kind in "biufc":
        # Plain numbers, the common case: no h5py checks, and numpy's name (slow to
        # work out) once per type.
        name = _NUMBER_NAMES.get(dtype)
        if name is None:
            name = _NUMBER_NAMES[dtype] = dtype.name
        return name
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


def within(path: str, root: str | None) -> bool:
    """Whether ``path``'s real path (symbolic links resolved) is ``root`` or lies below
    it; always True without a root."""
    if root is None:
        return True
    return _below(os.path.realpath(path), os.path.realpath(root))


def _below(real: str, top: str) -> bool:
    return real == top or real.startswith(top.rstrip("/") + "/")


def link_scope(path: str, root: str | None, depth: int | None) -> str | None:
    """The directory (a real path) whose files ``path``'s external links may open:
    ``root``, or with a ``depth`` the directory that many levels below ``root`` holding
    ``path`` (its own proposal's directory, say). ``""`` when ``path`` is not that deep
    below ``root``: its links open nothing. None without a root: anywhere."""
    if root is None:
        return None
    if not depth:
        return os.path.realpath(root)
    for mine, top in (
        (os.path.abspath(path), os.path.abspath(root)),
        (os.path.realpath(path), os.path.realpath(root)),
    ):
        parts = relative_parts(mine, top)
        if parts is not None and len(parts) > depth:
            return os.path.realpath(os.path.join(top, *parts[:depth]))
    return ""


class Node:
    """One object of a file (a group or a dataset) as reached through one link.

    What is read about it (``NX_class``, shape, type, layout, name) is read once and
    kept here. Nodes never refer back to their reader or their parents, so dropping
    the reader releases every HDF5 identifier at once.
    """

    __slots__ = (
        "hid",
        "_oid",
        "is_group",
        "_key",
        "_where",
        "_nx_class",
        "_info",
        "_mtype",
        "_plain",
        "_virtual",
    )

    def __init__(self, hid: int, is_group: bool, oid: Any = None) -> None:
        #: The HDF5 identifier (owned by the reader that opened it).
        self.hid = hid
        #: h5py's object for it, made when first wanted (:attr:`oid`).
        self._oid = oid
        self.is_group = is_group
        self._key: Any = None
        self._where: str | None = None
        self._nx_class: Any = _UNSET
        self._info: Any = None
        #: The memory type a read uses, and whether the low-level read serves the type.
        self._mtype: Any = None
        self._plain = False
        self._virtual: bool | None = None

    @property
    def oid(self) -> Any:
        """h5py's object for the identifier, made once: most datasets never need one
        (their shape, type and layout are asked through :mod:`indexers.h5lib`)."""
        oid = self._oid
        if oid is None:
            oid = self._oid = h5lib.wrap(self.hid, self.is_group)
        return oid

    @property
    def is_dataset(self) -> bool:
        return not self.is_group

    @property
    def key(self) -> Any:
        """The object's identity in its file (the same object reached by two links)."""
        if self._key is None:
            try:
                self._key = h5lib.object_key(self.hid)
            except h5lib.Failed:
                self._key = hash(self.oid)
        return self._key

    # -- datasets: each raises h5py's errors when the file cannot say -------------------
    def info(self) -> tuple[tuple[int, ...] | None, tuple[int | None, ...] | None, Any]:
        """(shape, maxshape, dtype) of a dataset, read once: shape None for a null
        dataspace, maxshape None where unlimited."""
        info = self._info
        if info is None:
            try:
                dims, maxdims, encoded = h5lib.dataset_space(self.hid)  # None: null space
            except h5lib.Failed:  # h5py's own calls: its outcome, its error
                space = self.oid.get_space()
                dims, maxdims = space.get_simple_extent_dims(), space.get_simple_extent_dims(True)
                encoded = None
            if encoded is None:  # a type HDF5 cannot encode: h5py works it out
                found = _type_info(self.oid.get_type().dtype)
            else:
                found = _decoded_type_info(encoded)
            dtype, self._mtype, self._plain = found
            if dims:
                unlimited = h5py.h5s.UNLIMITED
                maxshape = tuple(None if m == unlimited else m for m in maxdims or ())
                info = (tuple(dims), maxshape, dtype)
            else:  # null, or scalar: no extent beyond its shape
                info = (dims, dims, dtype)
            self._info = info
        return info  # type: ignore[no-any-return]

    @property
    def shape(self) -> tuple[int, ...] | None:
        """The dataset's shape; None for a null dataspace."""
        return self.info()[0]

    @property
    def maxshape(self) -> tuple[int | None, ...] | None:
        """The dataset's maximum shape, None where unlimited."""
        return self.info()[1]

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.info()[2]  # type: ignore[no-any-return]

    @property
    def size(self) -> int | None:
        shape = self.shape
        return None if shape is None else math.prod(shape)

    @property
    def is_virtual(self) -> bool:
        if self._virtual is None:
            try:
                self._virtual = h5lib.is_virtual(self.hid, _VIRTUAL_LAYOUT)
            except h5lib.Failed:  # h5py's own calls: its outcome, its error
                self._virtual = (
                    self.oid.get_offset() is None
                    and self.oid.get_create_plist().get_layout() == _VIRTUAL_LAYOUT
                )
        return self._virtual

    def virtual_sources(self) -> list[tuple[str, str]]:
        """(file name, dataset path) of each mapping of a virtual dataset."""
        dcpl = self.oid.get_create_plist()
        return [
            (
                name_text(dcpl.get_virtual_filename(index)),
                name_text(dcpl.get_virtual_dsetname(index)),
            )
            for index in range(dcpl.get_virtual_count())
        ]


class Link:
    """One member of a group: its name, kind and target, each looked up at most once."""

    __slots__ = ("raw", "name", "kind", "path", "filename", "target_raw", "node")

    def __init__(self, raw: bytes, name: str, kind: str | None) -> None:
        self.raw = raw
        self.name = name
        #: HARD, SOFT or EXTERNAL; None when the link itself is unreadable.
        self.kind = kind
        #: A soft link's target path; an external link's path inside its file.
        self.path: str | None = None
        #: An external link's file name, as written in the link.
        self.filename: str | None = None
        self.target_raw: bytes | None = None
        #: The object, once opened (None: unreachable).
        self.node: Any = _UNSET


class Reader:
    """One open file, its in-memory index and the bounds on reading it.

    Use as a context manager. ``root`` is the root group's node.
    """

    def __init__(self, path: str, settings: IndexerSettings, deadline: Deadline) -> None:
        self.path = path
        self.settings = settings
        #: Where linked files may be opened from (see :func:`link_scope`).
        self.scope = link_scope(path, settings.link_root, settings.link_scope_depth)
        self.deadline = deadline
        self.warnings: list[str] = []
        self.visited = 0
        self._max_objects = settings.max_objects
        self.truncated = False
        self._listings: dict[Any, dict[str, Link]] = {}
        #: Groups whose listing stopped at the object budget.
        self._cut: set[Any] = set()
        #: Groups listed without counting them against the budget (yet).
        self._unpaid: set[Any] = set()
        #: Members beyond a cut listing, opened by name (``member``).
        self._direct: dict[tuple[Any, bytes], Node | None] = {}
        #: Memo of the mapping's class and wildcard steps: (group key, segment) -> nodes.
        self.steps: dict[tuple[Any, str], list[Node]] = {}
        self._external: dict[str, Any] = {}
        #: Identifiers of the objects opened (:mod:`indexers.h5lib`), closed by close().
        self._opened: list[int] = []
        self.fid, self.swmr = open_file(path)
        self.root = Node(self.fid.id, True, self.fid)
        self.root._where = "/"
        #: The root group of each open file (this one and linked ones), by file number.
        self._roots: dict[Any, Node] = {self.fid.fileno: self.root}
        #: Soft and external links being followed at the moment (see ``target``).
        self._hops = 0

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release every identifier, then the files (linked files first).

        Files are released by dropping their last identifier, as every object is, not
        by h5py's ``FileID.close()``: that also sweeps h5py's registry of every open
        identifier in the process (for objects the close would invalidate, of which
        there are none left here), which cost more than reading a small file's root.
        """
        self._listings.clear()
        self._direct.clear()
        self.steps.clear()
        self.root = Node(-1, True)
        self._roots.clear()
        opened, self._opened = self._opened, []
        for hid in opened:
            h5lib.close_object(hid)
        self._external.clear()
        self.fid = None

    # -- bookkeeping --------------------------------------------------------------------
    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)

    def tick(self) -> None:
        """Count one object against the bounds; raise when one runs out."""
        visited = self.visited = self.visited + 1
        if visited > self._max_objects:
            self.truncated = True
            raise BudgetExceeded(f"more than {self._max_objects} objects")
        if not visited & 63:
            self.deadline.check()

    # -- the index ------------------------------------------------------------------------
    def listing(self, group: Node, *, count: bool = True) -> dict[str, Link]:
        """The group's members by name (as text), listed once per group and cached.

        Members come in h5py's order: creation order where the group tracks it, else
        by name. Each counts against ``max_objects`` -- with ``count=False`` not yet:
        a group only looked into by name (:meth:`member`) is counted when something
        lists it for its own sake.
        """
        key = group.key
        cached = self._listings.get(key)
        if cached is not None:
            if count and key in self._unpaid:
                self._unpaid.discard(key)
                self._pay(group, cached)
            return cached
        room = self.settings.max_objects + 1
        if count:
            room = max(self.settings.max_objects - self.visited, 0) + 1
        try:
            found = _list_links(group, room)
        except H5_ERRORS as exc:
            self.warn(f"{self.where(group)}: members unreadable: {_h5_reason(str(exc))}")
            found = []
        result: dict[str, Link] = {}
        if count:
            try:
                for raw, link_type in found:
                    self.tick()
                    name = name_text(raw)
                    if link_type == _TYPE_HARD:
                        result[name] = Link(raw, name, HARD)
                    else:
                        result[name] = self._link(group, raw, name, link_type)
            except BudgetExceeded as exc:
                self._stopped(group, len(result), exc)
        else:
            self.deadline.check()
            for raw, link_type in found:
                name = name_text(raw)
                if link_type == _TYPE_HARD:
                    result[name] = Link(raw, name, HARD)
                else:
                    result[name] = self._link(group, raw, name, link_type)
            self._unpaid.add(key)
        self._listings[key] = result
        return result

    def _pay(self, group: Node, listing: dict[str, Link]) -> None:
        """Count a listing made with ``count=False``; cut it where the budget ends."""
        names = list(listing)
        paid = 0
        try:
            while paid < len(names):
                self.tick()
                paid += 1
        except BudgetExceeded as exc:
            for name in names[paid:]:
                del listing[name]
            self._stopped(group, paid, exc)

    def _stopped(self, group: Node, listed: int, exc: BudgetExceeded) -> None:
        self.warn(f"{self.where(group)}: listing stopped after {listed} members: {exc}")
        self._cut.add(group.key)

    def _link(self, group: Node, raw: bytes, name: str, link_type: int) -> Link:
        if link_type != _TYPE_SOFT and link_type != _TYPE_EXTERNAL:
            return Link(raw, name, HARD)
        try:
            value = group.oid.links.get_val(raw)
        except H5_ERRORS as exc:
            self.warn(f"{self.where(group)}/{name}: {_h5_reason(str(exc))}")
            return Link(raw, name, None)
        if link_type == _TYPE_SOFT:
            link = Link(raw, name, SOFT)
            link.path = name_text(value)
            link.target_raw = value
            return link
        filename, path = value
        link = Link(raw, name, EXTERNAL)
        link.filename = os.fsdecode(filename)
        link.path = name_text(path)
        link.target_raw = path
        return link

    def target(self, group: Node, link: Link) -> Node | None:
        """The object a member names, following soft links and (when allowed) external
        ones, or None when it cannot be reached (dangling, missing file, unreadable, a
        cycle of links, or more than MAX_LINK_HOPS of them in a row).

        HDF5 would follow every soft and external link along a path by itself, past
        ``follow_external_links`` and ``link_root`` (a soft link to ``/ext/x`` where
        ``/ext`` is an external link into any file on the machine). So only a hard link
        is opened by HDF5, one name at a time; a soft link's path is walked here
        (:meth:`resolve`) and an external link goes through :meth:`external_object`.
        """
        node = link.node
        if node is _UNSET:
            link.node = None  # met again while it is being followed: a cycle
            if link.kind is None:
                node = None
            elif link.kind == HARD:
                node = self._open(group, link.raw)
            elif self._hops >= MAX_LINK_HOPS:
                self.warn(f"{self.where(group)}/{link.name}: more than {MAX_LINK_HOPS} links")
                node = None
            else:
                assert link.target_raw is not None
                self._hops += 1
                try:
                    if link.kind == EXTERNAL:
                        assert link.filename is not None
                        node = self.external_object(link.filename, link.target_raw)
                    else:
                        node = self.resolve(group, link.target_raw)
                finally:
                    self._hops -= 1
            link.node = node
        return node  # type: ignore[no-any-return]

    def _open(self, group: Node, raw: bytes) -> Node | None:
        """The group or dataset the hard link ``raw`` of ``group`` names; None when
        unreachable (or a named datatype)."""
        opened = h5lib.open_object(group.hid, raw)
        if opened is None:
            return None
        self._opened.append(opened[0])
        return Node(*opened)

    def resolve(self, start: Node, path: bytes) -> Node | None:
        """The object ``path`` names from the group ``start`` (an absolute path: from the
        root of ``start``'s file), one member at a time through the index (each link
        followed by :meth:`target`), or None."""
        node: Node | None = start
        if path.startswith(b"/"):
            node = self._roots.get(start.oid.fileno)
        for part in path.split(b"/"):
            if node is None or not node.is_group:
                return None
            if part and part != b".":
                node = self.member(node, name_text(part))
        return node

    def member(self, group: Node, name: str) -> Node | None:
        """The object ``name`` in ``group`` (links followed), or None.

        From the group's listing; where that stopped at the object budget, a member
        beyond it is opened by name.
        """
        listing = self.listing(group, count=False)
        link = listing.get(name)
        if link is not None:
            return self.target(group, link)
        key = group.key
        if key not in self._cut:
            return None
        raw = name.encode("utf-8", "surrogateescape")
        direct = self._direct.get((key, raw), _UNSET)
        if direct is _UNSET:
            direct = self._direct[(key, raw)] = self._by_name(group, raw, name)
        return direct  # type: ignore[no-any-return]

    def _by_name(self, group: Node, raw: bytes, name: str) -> Node | None:
        """A member not in the (cut) listing, looked up by name; its link followed as
        :meth:`target` follows any."""
        try:
            link_type = group.oid.links.get_info(raw).type
        except H5_ERRORS:
            return None
        if link_type == _TYPE_HARD:
            return self.target(group, Link(raw, name, HARD))
        return self.target(group, self._link(group, raw, name, link_type))

    def may_open(self, target: str) -> bool:
        """Whether a linked file may be opened or even looked at (whether it exists):
        only inside :attr:`scope`, so a file never learns about another proposal's."""
        if self.scope is None:
            return True
        # The scope is a real path already: one realpath per linked file, not two.
        return self.scope != "" and _below(os.path.realpath(target), self.scope)

    def external_object(self, filename: str, path: bytes) -> Node | None:
        if not self.settings.follow_external_links:
            return None
        target = resolve_file(self.path, filename)
        if not self.may_open(target):
            if target not in self._external:
                self._external[target] = None
                where = self.scope or "none: this file is in no proposal"
                self.warn(f"linked file {target}: outside the link scope ({where}), not followed")
            return None
        if target not in self._external:
            handle: Any
            try:
                handle = open_file(target)[0] if os.path.isfile(target) else None
            except ExtractionError as exc:
                self.warn(f"linked file {target}: {exc}")
                handle = None
            self._external[target] = handle
        handle = self._external[target]
        if handle is None:
            return None
        root = self._roots.get(handle.fileno)
        if root is None:
            root = self._roots[handle.fileno] = Node(handle.id, True, handle)
            root._where = "/"
        return self.resolve(root, b"/" + path.lstrip(b"/"))

    # -- what objects hold ----------------------------------------------------------------
    def attr(self, node: Node, name: str) -> Any:
        """One attribute's raw value, or None when absent or unreadable."""
        return self._attr(node, name, False)

    def text_attr(self, node: Node, name: str) -> str | None:
        """One attribute as text (:func:`to_text`), or None when absent or unreadable."""
        return to_text(self._attr(node, name, True))

    def _attr(self, node: Node, name: str, text: bool) -> Any:
        try:
            return _read_attr(node, name, self.settings.max_array_bytes, text=text)
        except H5_ERRORS as exc:
            self.warn(f"{self.where(node)}@{name}: {_h5_reason(str(exc))}")
            return None

    def nx_class(self, node: Node) -> str | None:
        """The group's ``NX_class`` (any string storage), read once; None for datasets."""
        cached = node._nx_class
        if cached is _UNSET:
            cached = node._nx_class = self.text_attr(node, "NX_class") if node.is_group else None
        return cached  # type: ignore[no-any-return]

    def attributes(self, node: Node) -> tuple[dict[str, Any], int]:
        """Up to ``max_attributes`` attributes as JSON values, and how many there are."""
        from indexers.normalise import to_json_value

        oid = node.oid
        try:
            count = int(h5py.h5o.get_info(oid).num_attrs)
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
            h5py.h5a.iterate(oid, collect, index_type=_INDEX_NAME, order=_ITER_NATIVE)
        except H5_ERRORS as exc:
            self.warn(f"{self.where(node)}: attributes unreadable: {_h5_reason(str(exc))}")
            return result, count
        manager: Any = None
        for name in names:
            self.deadline.check()
            try:
                aid = h5py.h5a.open(oid, name)
                shape = aid.get_space().get_simple_extent_dims()  # None: a null dataspace
                dtype, mtype, plain = type_info(aid.get_type())
                if nbytes(shape, dtype.itemsize) > self.settings.max_array_bytes:
                    result[name_text(name)] = None
                    continue
                if shape is not None and plain:
                    # The low-level read, as ``attrs[name]`` would give it.
                    out = np.empty(shape, dtype=dtype)
                    aid.read(out, mtype=mtype)
                    check_strings(out, self.settings.max_array_bytes)
                    value = to_json_value(out)
                else:
                    if manager is None:
                        manager = _high_level(oid).attrs
                    value = to_json_value(manager[name])
            except H5_ERRORS as exc:
                self.warn(f"{self.where(node)}@{name_text(name)}: {_h5_reason(str(exc))}")
                continue
            result[name_text(name)] = value
        return result, count

    def read(self, node: Node) -> Any:
        """A small dataset's value; TooLarge beyond ``max_array_bytes``; H5 errors pass."""
        if node.is_group:
            raise TypeError("is a group, not a value")
        shape, _, dtype = node.info()
        if shape is None:
            return None
        if node.is_virtual:
            # Its values are read by HDF5 from the source files the mapping names, past
            # follow_external_links and link_root: only its shape and type are known.
            raise TooLarge("a virtual dataset: its values are in other files, not read")
        size = nbytes(shape, dtype.itemsize)
        if size > self.settings.max_array_bytes:
            raise TooLarge(
                f"{size} bytes (shape {list(shape)}) exceeds the {self.settings.max_array_bytes}"
                "-byte bound"
            )
        if node._plain and node._mtype is not None:
            try:
                out = _native_read(node, shape, dtype, self.settings.max_array_bytes)
            except h5lib.Failed:  # h5py's own calls: its outcome, its error
                out = None
            if out is not None:
                return out if shape else out[()]
        if node._plain:
            # The low-level read: h5py's slicing machinery costs more than the read.
            out = np.empty(shape, dtype=dtype)
            node.oid.read(_ALL, _ALL, out, mtype=node._mtype)
            if dtype.kind == "O":
                check_strings(out, self.settings.max_array_bytes)
            return out if shape else out[()]
        return _high_level(node.oid)[()]

    def where(self, node: Node) -> str:
        """The path by which the object was opened (in its own file), "?" when unknown."""
        if node._where is None:
            try:
                name = h5py.h5i.get_name(node.oid)
            except H5_ERRORS:
                name = None
            node._where = name_text(name) if name else "?"
        return node._where


def _list_links(group: Node, room: int) -> list[tuple[bytes, int]]:
    """(name, link type) of the first ``room`` members of a group, in h5py's order:
    creation order where the group tracks it, else by name."""
    try:
        return _ordered_links(functools.partial(h5lib.list_links, group.hid), room)
    except h5lib.Failed:  # h5py's own calls: its outcome, its error
        return _ordered_links(functools.partial(_h5py_links, group.oid), room)


def _h5py_links(oid: Any, index: int, room: int) -> list[h5lib.LinkRow]:
    """:func:`h5lib.list_links` through h5py."""
    found: list[h5lib.LinkRow] = []

    def collect(name: bytes, info: Any) -> bool | None:
        found.append((name, info.type, info.corder_valid, info.corder))
        return True if len(found) >= room else None  # a value stops the iteration

    oid.links.iterate(collect, info=True, idx_type=index)
    return found


def _ordered_links(
    iterate: Callable[[int, int], list[h5lib.LinkRow]], room: int
) -> list[tuple[bytes, int]]:
    # One pass by name; a group that tracks creation order says so on every link.
    found = iterate(_INDEX_NAME, room)
    if not (found and all(tracked for _, _, tracked, _ in found)):
        return [(name, kind) for name, kind, _, _ in found]
    if len(found) < room:
        found.sort(key=lambda item: item[3])
        return [(name, kind) for name, kind, _, _ in found]
    # Cut short: the first members in creation order are not the first by name.
    try:
        found = iterate(_INDEX_CRT_ORDER, room)
    except H5_ERRORS:  # tracked but not indexed: by name, as h5py lists it
        found = iterate(_INDEX_NAME, room)
    return [(name, kind) for name, kind, _, _ in found]


def _high_level(oid: Any) -> Any:
    """h5py's high-level object for an identifier (the rare reads the low level lacks)."""
    if isinstance(oid, h5py.h5f.FileID):
        return h5py.File(oid)
    if isinstance(oid, h5py.h5g.GroupID):
        return h5py.Group(oid)
    return h5py.Dataset(oid)


def _read_attr(node: Node, name: str, max_bytes: int, *, text: bool = False) -> Any:
    """An attribute through the low-level API (a fraction of ``obj.attrs[name]``'s cost);
    TooLarge when it holds more than ``max_bytes``.

    With ``text`` (the value is only made text of, where one string in an array of one
    is that string), one variable-length string is read without asking its dataspace.
    """
    raw = name.encode()
    try:
        if not h5lib.has_attribute(node.hid, raw):
            return None
        return _native_attr(node, raw, name, max_bytes, text=text)
    except h5lib.Failed:  # h5py's own calls: its outcome, its error
        if not h5py.h5a.exists(node.oid, raw):
            return None
        return _h5py_attr(node, raw, name, max_bytes, None, text=text)


def _native_attr(node: Node, raw: bytes, name: str, max_bytes: int, *, text: bool) -> Any:
    """:func:`_read_attr` of an attribute that exists, through :mod:`indexers.h5lib`
    (h5py's object for the node is not made); through h5py where its conversions make
    the value (variable-length values but one string, compound types)."""
    with h5lib.Attribute(node.hid, raw) as attribute:
        found = _attribute_type(node, raw, attribute.encoded_type())
        dtype, mtype, plain = found
        if not plain or mtype is None:
            return _h5py_attr(node, raw, name, max_bytes, found, text=text)
        storage = attribute.storage_size()
        one = storage == dtype.itemsize
        if dtype.kind == "O":
            if not (text and storage == _VLEN_IN_FILE and _one_element(attribute.dims())):
                return _h5py_attr(node, raw, name, max_bytes, found, text=text)
            value = _vlen_text(attribute.read_vlen_string(), dtype, max_bytes)
            if value is None:
                return _h5py_attr(node, raw, name, max_bytes, found, text=text)
            out = np.empty((), dtype=dtype)
            out[()] = value
            return out
        dims = attribute.dims()
        if dims is None:
            return None  # a null dataspace
        if one != _one_element(dims):  # (one element, by its storage, or not)
            return _h5py_attr(node, raw, name, max_bytes, found, text=text)
        # HDF5 writes every element: the array is made for the attribute's extent.
        shape = () if one else _attribute_shape(dims, dtype, max_bytes)
        out = np.empty(shape, dtype=dtype)
        attribute.read_into(mtype.id, out.ctypes.data)
        return out


def _native_read(node: Node, shape: tuple[int, ...], dtype: np.dtype[Any], max_bytes: int) -> Any:
    """A dataset's value through :mod:`indexers.h5lib`: numbers and fixed-length strings,
    and one variable-length string; None for what h5py's conversions read (other
    variable-length values)."""
    if dtype.kind != "O":
        out = np.empty(shape, dtype=dtype)
        h5lib.read_dataset(node.hid, node._mtype.id, out.ctypes.data)
        return out
    if not _one_element(shape):
        return None
    value = _vlen_text(h5lib.read_dataset_vlen_string(node.hid), dtype, max_bytes)
    if value is None:
        return None
    out = np.empty(shape, dtype=dtype)
    out.flat[0] = value
    return out


def _vlen_text(raw: bytes, dtype: np.dtype[Any], max_bytes: int) -> str | bytes | None:
    """One variable-length string as h5py gives it (text where its type says UTF-8);
    None where h5py's own decoding is wanted; TooLarge beyond ``max_bytes``."""
    value: str | bytes = raw
    if dtype.metadata and dtype.metadata.get("vlen") is str:
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if len(value) > max_bytes:
        raise TooLarge(f"{len(value)} bytes of text exceeds the {max_bytes}-byte bound")
    return value


def _one_element(dims: tuple[int, ...] | None) -> bool:
    """Whether a dataspace holds exactly one element (what a read of one writes)."""
    return dims is not None and math.prod(dims) == 1


def _attribute_type(node: Node, raw: bytes, encoded: bytes | None) -> Any:
    """:func:`type_info` of an attribute's type (HDF5's ``encoded`` one, else h5py's)."""
    if encoded is not None:
        return _decoded_type_info(encoded)
    return _type_info(h5py.h5a.open(node.oid, raw).get_type().dtype)


def _attribute_shape(
    shape: tuple[int, ...] | None, dtype: np.dtype[Any], max_bytes: int
) -> tuple[int, ...] | None:
    """An attribute's shape, None for a null dataspace; TooLarge beyond ``max_bytes``."""
    if shape is not None:
        size = nbytes(shape, dtype.itemsize)
        if size > max_bytes:
            raise TooLarge(f"{size} bytes exceeds the {max_bytes}-byte bound")
    return shape


def _h5py_attr(node: Node, raw: bytes, name: str, max_bytes: int, found: Any, *, text: bool) -> Any:
    """An attribute read through h5py (variable-length and compound types: h5py's
    conversions make their values)."""
    oid = node.oid
    aid = h5py.h5a.open(oid, raw)
    dtype, mtype, plain = type_info(aid.get_type()) if found is None else found
    if not plain:
        if aid.get_space().get_simple_extent_type() == _NULL_SPACE:
            return None
        return _high_level(oid).attrs[name]
    storage = aid.get_storage_size()
    shape: tuple[int, ...] | None = ()
    if not (storage == dtype.itemsize or (text and storage == _VLEN_IN_FILE and dtype.kind == "O")):
        # (One element, the usual case: its shape, () or (1,), means nothing to the
        # callers, so the dataspace need not be asked.)
        shape = _attribute_shape(aid.get_space().get_simple_extent_dims(), dtype, max_bytes)
    if shape is None:
        return None  # a null dataspace
    out = np.empty(shape, dtype=dtype)
    aid.read(out, mtype=mtype)
    if dtype.kind == "O":
        check_strings(out, max_bytes)
    return out


def check_strings(out: Any, max_bytes: int) -> None:
    """TooLarge when variable-length strings hold more than ``max_bytes``: their size
    is known only once read (the type's size is that of a pointer)."""
    if out.dtype.kind == "O":
        size = sum(len(v) for v in out.flat if isinstance(v, bytes | str))
        if size > max_bytes:
            raise TooLarge(f"{size} bytes of text exceeds the {max_bytes}-byte bound")


_numpy_types: dict[bytes, tuple[np.dtype[Any], Any, bool]] = {}
#: Distinct types kept, at most (each a few dozen bytes).
_NUMPY_TYPES_KEPT = 4096


def numpy_type(tid: Any) -> np.dtype[Any]:
    """h5py's numpy dtype for an HDF5 type (``tid.dtype``), worked out once per distinct
    type: HDF5's own encoding of the type is the key, so equal types share it."""
    return type_info(tid)[0]


def type_info(tid: Any) -> tuple[np.dtype[Any], Any, bool]:
    """(dtype, memory type, plain) for an HDF5 type, worked out once per distinct type:
    ``plain`` when the low-level read serves it (numbers and strings, no compound), the
    memory type the read then uses (:func:`memory_type`; None otherwise)."""
    try:
        key = tid.encode()
    except H5_ERRORS:
        return _type_info(tid.dtype)
    found = _numpy_types.get(key)
    if found is None:
        found = _keep_type(key, _type_info(tid.dtype))
    return found


def _decoded_type_info(encoded: bytes) -> tuple[np.dtype[Any], Any, bool]:
    """:func:`type_info` of the type HDF5 encoded as ``encoded``: the one kept, or
    worked out (and kept)."""
    found = _numpy_types.get(encoded)
    if found is None:
        found = _keep_type(encoded, _type_info(h5py.h5t.decode(encoded).dtype))
    return found


def _keep_type(
    key: bytes, found: tuple[np.dtype[Any], Any, bool]
) -> tuple[np.dtype[Any], Any, bool]:
    if len(_numpy_types) < _NUMPY_TYPES_KEPT:
        _numpy_types[key] = found
    return found


def _type_info(dtype: np.dtype[Any]) -> tuple[np.dtype[Any], Any, bool]:
    plain = dtype.kind in "biufSO" and dtype.names is None
    return dtype, (memory_type(dtype) if plain else None), plain


_memory_types: dict[tuple[str, Any], Any] = {}
#: Distinct memory types kept (string lengths vary: the cache must stay bounded).
_MEMORY_TYPES_KEPT = 1024
_PLAIN_METADATA = frozenset({"vlen", "h5py_encoding"})


def memory_type(dtype: np.dtype[Any]) -> Any:
    """The HDF5 memory type h5py would make for ``dtype`` (``h5t.py_create``), made
    once per distinct type: making it costs more than the read it is for. None (h5py
    makes it) for types whose description is not simply hashable."""
    metadata = dtype.metadata
    meta_key: Any = None
    if metadata:
        if not _PLAIN_METADATA.issuperset(metadata):
            return None
        vlen = metadata.get("vlen")
        if vlen is not None and vlen is not str and vlen is not bytes:
            return None
        meta_key = (vlen, metadata.get("h5py_encoding"))
    key = (dtype.str, meta_key)
    found = _memory_types.get(key)
    if found is None:
        found = h5py.h5t.py_create(dtype)
        if len(_memory_types) < _MEMORY_TYPES_KEPT:
            _memory_types[key] = found
    return found
