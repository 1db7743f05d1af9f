"""The catalogue's document: one per file, plain data.

Every store keeps and returns exactly these fields. ``path`` is a ``str`` as
:func:`os.fsdecode` gives it: bytes that are not valid UTF-8 are carried as surrogate
escapes, so the exact name survives a round trip through any store. :func:`to_json`
renders a document for people and tools (JSON Lines), with such names shown with
``\\xNN`` escapes and their exact bytes in ``path_b64``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig, Location, access_groups, classify

#: Kinds of file, as ``catalogd extract`` reports them.
KIND_NEXUS = "nexus"
KIND_HDF5 = "hdf5"
KIND_OTHER = "other"
KINDS = (KIND_NEXUS, KIND_HDF5, KIND_OTHER)

JSONDict = dict[str, Any]


def document_id(path: str) -> str:
    """The stable id of the document for ``path``: the same path always gives the same id."""
    return hashlib.blake2b(os.fsencode(path), digest_size=16).hexdigest()


def utc_iso(timestamp: float | None) -> str | None:
    """A POSIX timestamp as ISO 8601 in UTC, or None."""
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).isoformat()


def display_path(path: str) -> str:
    """``path`` as valid text: undecodable bytes shown as ``\\xNN``."""
    if path.isascii():  # (nearly every path: itself, without the round trip)
        return path
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def is_text_path(path: str) -> bool:
    """True when ``path`` is valid UTF-8 (no surrogate escapes)."""
    if path.isascii():
        return True
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class FileDocument:
    """One file of the tree, with its layout, access groups and metadata."""

    id: str
    path: str
    name: str
    size: int
    mtime: float
    ctime: float
    inode: int
    dev: int
    uid: int
    gid: int
    owner: str | None
    group: str | None
    mode: int  # the full st_mode: file type, setuid/setgid/sticky and permission bits
    level: str
    user_type: str | None = None
    beamline: str | None = None
    proposal: str | None = None
    visit: str | None = None
    visit_date: str | None = None  # ISO date
    area: str | None = None
    inner_path: str | None = None
    access_groups: tuple[str, ...] = ()
    kind: str = KIND_OTHER
    #: One mapping per NeXus entry, as ``catalogd extract`` gives them.
    entries: tuple[JSONDict, ...] = ()
    #: Non-NeXus facts from the indexers (HDF5 summary, links, master file).
    metadata: JSONDict = field(default_factory=dict)
    #: Why metadata could not be extracted, or None.
    error: str | None = None
    indexed_at: float = 0.0

    # -- derived values, used by every store the same way -----------------------------
    @property
    def title(self) -> str | None:
        """The first entry's title."""
        return _first_text(self.entries, "title")

    @property
    def start_time(self) -> str | None:
        """The measurement start: the earliest entry start time (ISO 8601)."""
        starts = [e["start_time"] for e in self.entries if isinstance(e.get("start_time"), str)]
        return min(starts) if starts else None

    @property
    def sample(self) -> str | None:
        for entry in self.entries:
            sample = entry.get("sample")
            if isinstance(sample, Mapping) and isinstance(sample.get("name"), str):
                return str(sample["name"])
        return None

    def search_text(self) -> str:
        """The text free-text search looks in: name, path, proposal, titles, samples."""
        parts: list[str] = [display_path(self.path), self.proposal or ""]
        for entry in self.entries:
            for key in ("title", "experiment_identifier", "definition"):
                value = entry.get(key)
                if isinstance(value, str):
                    parts.append(value)
            sample = entry.get("sample")
            if isinstance(sample, Mapping):
                for key in ("name", "chemical_formula", "description"):
                    value = sample.get(key)
                    if isinstance(value, str):
                        parts.append(value)
        return "\n".join(p for p in parts if p)

    def with_changes(self, **changes: Any) -> FileDocument:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        values.update(changes)
        return FileDocument(**values)


def _first_text(entries: tuple[JSONDict, ...], key: str) -> str | None:
    for entry in entries:
        value = entry.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def document_from_stat(
    path: str,
    st: os.stat_result,
    location: Location,
    layout: LayoutConfig,
    *,
    owner: str | None,
    group: str | None,
    indexed_at: float,
    kind: str = KIND_OTHER,
    entries: tuple[JSONDict, ...] = (),
    metadata: JSONDict | None = None,
    error: str | None = None,
) -> FileDocument:
    """Build the document for one file from its stat result and layout location."""
    return FileDocument(
        id=document_id(path),
        path=path,
        name=os.path.basename(path),
        size=st.st_size,
        mtime=st.st_mtime,
        ctime=st.st_ctime,
        inode=st.st_ino,
        dev=st.st_dev,
        uid=st.st_uid,
        gid=st.st_gid,
        owner=owner,
        group=group,
        mode=st.st_mode,
        level=location.level.value,
        access_groups=access_groups(location, layout, is_dir=stat.S_ISDIR(st.st_mode)),
        kind=kind,
        entries=entries,
        metadata=metadata or {},
        error=error,
        indexed_at=indexed_at,
        **location.fields(),
    )


class DocumentBuilder:
    """Builds documents from stat results for one layout, resolving names once per id."""

    def __init__(self, layout: LayoutConfig, names: NameCache, clock: Callable[[], float]) -> None:
        self.layout = layout
        self.names = names
        self.clock = clock

    def build(self, path: str, st: os.stat_result) -> FileDocument:
        """The document for one file, indexed now, without metadata yet."""
        return document_from_stat(
            path,
            st,
            classify(path, self.layout),
            self.layout,
            owner=self.names.owner(st.st_uid),
            group=self.names.group(st.st_gid),
            indexed_at=self.clock(),
        )


_FIELD_NAMES = tuple(f.name for f in fields(FileDocument))


#: How to_json renders each field that is not shown as it is (the API's items too, see
#: :func:`rendered`): paths as text, times as ISO 8601, tuples as lists. The rest,
#: fields and properties (``title``, ``start_time``), are the document's attributes.
_RENDERERS: dict[str, Callable[[FileDocument], Any]] = {
    "path": lambda doc: display_path(doc.path),
    "path_b64": lambda doc: (
        None if is_text_path(doc.path) else base64.b64encode(os.fsencode(doc.path)).decode("ascii")
    ),
    "name": lambda doc: display_path(doc.name),
    "inner_path": lambda doc: None if doc.inner_path is None else display_path(doc.inner_path),
    "access_groups": lambda doc: list(doc.access_groups),
    "entries": lambda doc: list(doc.entries),
    "mode_octal": lambda doc: f"{stat.S_IMODE(doc.mode):04o}",
    "mtime": lambda doc: utc_iso(doc.mtime),
    "ctime": lambda doc: utc_iso(doc.ctime),
    "indexed_at": lambda doc: utc_iso(doc.indexed_at),
}
_JSON_NAMES = (*_FIELD_NAMES, "path_b64", "mode_octal", "title", "start_time")


def rendered(doc: FileDocument, names: Iterable[str]) -> JSONDict:
    """``names`` -> their values as :func:`to_json` renders them (``path_b64`` None
    when the path is text), and only those: what is not asked for costs nothing."""
    return {
        name: render(doc) if (render := _RENDERERS.get(name)) else getattr(doc, name)
        for name in names
    }


def to_json(doc: FileDocument) -> JSONDict:
    """The document as JSON-ready data, the shape ``catalogd search --json`` prints:
    every field, rendered (see _RENDERERS), and ``path_b64`` when the path is not text.

    A shallow copy: ``entries`` and ``metadata`` are the document's own (frozen
    document, JSON-ready values), not deep copies, which cost more than the rest of an
    API answer (``dataclasses.asdict`` took ~27 ms for 50 NeXus documents)."""
    data = rendered(doc, _JSON_NAMES)
    if data["path_b64"] is None:
        del data["path_b64"]
    return data
