"""What an indexer is, what it is given and what it returns: plain data only.

An indexer is any object with a ``name``, a ``priority``, ``accepts(probe)`` and
``extract(probe, settings, deadline)``. The registry probes each file once (size and
content signature), asks the indexers by falling priority which accepts it, and turns
whatever the chosen one returns or raises into an :class:`ExtractResult`.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from catalogd.document import KIND_OTHER
from catalogd.errors import ExtractionError
from indexers.normalise import clean_str
from indexers.settings import IndexerSettings

JSONDict = dict[str, Any]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Other formats recognised by their first bytes, so errors can name them.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x0e\x03\x13\x01", "hdf4"),
    (b"CDF\x01", "netcdf3"),
    (b"CDF\x02", "netcdf3-64bit"),
    (b"CDF\x05", "netcdf3-cdf5"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"###CBF", "cbf"),
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
)
#: How many bytes of the head of a file the probe keeps.
HEAD_BYTES = 512


class ExtractionTimeout(ExtractionError):
    """The per-file time bound ran out."""


class FileChanged(ExtractionError):
    """The file changed while being read (still being written): worth a retry."""


@dataclass(frozen=True, slots=True)
class Probe:
    """What is known about a file before an indexer opens it."""

    path: str
    size: int
    mtime_ns: int
    head: bytes
    #: Offset of the HDF5 superblock (0, 512, 1024, ...), None when not HDF5.
    hdf5_offset: int | None
    #: A recognised non-HDF5 format ("hdf4", "netcdf3", ...), else None.
    format: str | None

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.path)[1].lower()

    @property
    def is_hdf5(self) -> bool:
        return self.hdf5_offset is not None


def find_hdf5_signature(fd: int, size: int) -> int | None:
    """Offset of the HDF5 signature: 0, or a power of two from 512 (the user-block rule)."""
    offset = 0
    while offset + len(HDF5_SIGNATURE) <= size:
        if os.pread(fd, len(HDF5_SIGNATURE), offset) == HDF5_SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def probe_file(path: str) -> Probe:
    """Size, head and signature of ``path``; OSError when it cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(21, "not a regular file", path)
        head = os.pread(fd, HEAD_BYTES, 0)
        offset = find_hdf5_signature(fd, st.st_size)
    finally:
        os.close(fd)
    fmt = None
    if offset is None:
        fmt = next((name for sig, name in SIGNATURES if head.startswith(sig)), None)
    return Probe(path, st.st_size, st.st_mtime_ns, head, offset, fmt)


def wants_extraction(path: str, size: int, hdf5_suffixes: Collection[str]) -> bool:
    """Whether the indexers should read ``path``: a suffix that claims HDF5 (so a broken
    ``.h5`` file gets its error recorded), or the HDF5 signature. A file too small to
    hold a signature is not opened; an unreadable one is left to its stat facts."""
    if os.path.splitext(path)[1].lower() in hdf5_suffixes:
        return True
    if size < len(HDF5_SIGNATURE):
        return False
    try:
        return probe_file(path).is_hdf5
    except OSError:
        return False


class Deadline:
    """A point in time after which :meth:`check` raises :class:`ExtractionTimeout`."""

    __slots__ = ("seconds", "_end")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def check(self) -> None:
        if time.monotonic() >= self._end:
            raise ExtractionTimeout(f"gave up after the time bound of {self.seconds:g} s")


@dataclass(frozen=True, slots=True)
class IndexerOutput:
    """What an indexer returns for a file it read."""

    kind: str
    entries: tuple[JSONDict, ...] = ()
    metadata: JSONDict = field(default_factory=dict)


@runtime_checkable
class Indexer(Protocol):
    """The extension point: found through the ``catalogd.indexers`` entry-point group."""

    #: Short name, as in the entry point.
    name: str
    #: Higher first: the NeXus indexer (20) is asked before the plain HDF5 one (10).
    priority: int

    def accepts(self, probe: Probe) -> bool:
        """Whether this indexer reads the file (decide from the probe; do not open it)."""
        ...

    def extract(self, probe: Probe, settings: IndexerSettings, deadline: Deadline) -> IndexerOutput:
        """Read the file. Raise ExtractionError (with a clear message) when it cannot be."""
        ...


@dataclass(frozen=True, slots=True)
class ResultLine:
    """One file's outcome as its ``catalogd extract`` line (:meth:`ExtractResult.to_json_line`),
    made where the file was read: a worker process sends the line, not the result's
    nested data, which the parent would only turn into the line."""

    path: str
    ok: bool
    line: str

    @classmethod
    def of(cls, result: ExtractResult) -> ResultLine:
        return cls(result.path, result.ok, result.to_json_line())


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtractResult:
    """The outcome of extracting one file; never an exception."""

    path: str
    ok: bool
    error: str | None = None
    kind: str = KIND_OTHER
    entries: tuple[JSONDict, ...] = ()
    #: Everything that is not an entry: ``structure``, ``links``, ``master``, ``role``,
    #: ``fields``, ``field_errors``, ``warnings``, ``format``. Store it as the document's
    #: ``metadata``.
    metadata: JSONDict = field(default_factory=dict)
    indexer: str | None = None
    elapsed_s: float = 0.0

    def to_json(self) -> JSONDict:
        """The ``catalogd extract`` JSON Lines object (DESIGN.md's contract)."""
        return _clean(self._data())  # type: ignore[no-any-return]

    def to_json_line(self) -> str:
        """:meth:`to_json` as one line of JSON (no newline), valid UTF-8 when encoded."""
        line = json.dumps(self._data(), ensure_ascii=False, separators=(",", ":"))
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # surrogate escapes from undecodable names: clean them
            line = json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))
        return line

    def _data(self) -> JSONDict:
        data: JSONDict = {
            "path": self.path,
            "ok": self.ok,
            "error": self.error,
            "kind": self.kind,
            "entries": list(self.entries),
        }
        for key, value in self.metadata.items():
            data.setdefault(key, value)
        data["indexer"] = self.indexer
        return data

    @classmethod
    def failure(cls, path: str, error: str, **kwargs: Any) -> ExtractResult:
        return cls(path=path, ok=False, error=error, **kwargs)


def _clean(value: Any) -> Any:
    """Every string valid UTF-8 (file names may carry surrogate escapes)."""
    if isinstance(value, str):
        return clean_str(value)
    if isinstance(value, dict):
        return {clean_str(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
