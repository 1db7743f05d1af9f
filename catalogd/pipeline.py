"""The stage chain every path goes through: stat, classify, policy, extract, document, store.

One module, used by the one-shot scan (:mod:`catalogd.scan`), the daemon's reconcile
(:mod:`catalogd.daemon.reconcile`) and the daemon's per-path decisions for the watcher
(:class:`catalogd.daemon.pipeline.Pipeline`). The stages:

- **stat** of a tree: :func:`tree_pass` walks it with the audit's walker
  (:func:`catalogd.policy.walker.iter_tree`: forked children list and ``fstatat`` the
  entries, send back stat tuples, in parts); of one path: ``lstat``;
- **classify**: :func:`catalogd.layout.classify` (cached per directory in
  :class:`Documents`);
- **policy**: :func:`catalogd.policy.walker.policy_findings` for one entry; the walk's
  children run the same check on every entry they see (with the quick "certainly
  clean" test first); :func:`record_pass` records what a complete pass of a tree found,
  and resolves what it no longer found, as the daemon does per path;
- **change**: :func:`compare` says whether a file is new, changed, changed in its
  attributes only, or unchanged against its stored fingerprint;
- **extract**: :func:`wants_extraction` picks the files for the indexers;
  :func:`extract_documents` hands them over in batches and :func:`merge_result`
  merges what they read;
- **document**: :class:`Documents` builds a file's document (the same as
  :class:`catalogd.document.DocumentBuilder` would, once per file); :func:`keep_metadata`
  keeps what the indexers read when only the attributes changed;
- **store**: ``Store.put`` in large batches, ``Store.delete`` for what a complete pass
  did not find (:func:`gone_after_pass`).
"""

from __future__ import annotations

import enum
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from catalogd.document import FileDocument, document_id
from catalogd.errors import StoreError, UsageError, describe_os_error
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig, Level, Location, access_groups, classify
from catalogd.policy import Policy
from catalogd.policy.walker import (
    AuditPart,
    FileStat,
    Opener,
    TreeAuditor,
    as_stat,
    file_stat,
    iter_tree,
    open_dir,
    policy_findings,
)
from catalogd.store.base import Fingerprint, Store
from catalogd.store.query import under_prefix
from catalogd.violations import Violation

if TYPE_CHECKING:  # the indexers (numpy, h5py) are imported when a file is read
    from indexers.base import ExtractResult
    from indexers.settings import IndexerSettings

DEFAULT_PROCESSES = os.cpu_count() or 1


# -- change --------------------------------------------------------------------------
class Change(enum.Enum):
    NEW = "new"  # no document yet
    CONTENT = "content"  # size, mtime or inode differ: extract again
    ATTRIB = "attrib"  # ctime alone differs: owner, group or mode changed
    NONE = "none"  # the fingerprint is the same


def compare(
    before: Fingerprint | None, size: int, mtime: float, ctime: float, inode: int
) -> Change:
    """How a file with these facts differs from the document stored as ``before``."""
    if before is None:
        return Change.NEW
    if before.size != size or before.mtime != mtime or before.inode != inode:
        return Change.CONTENT
    if before.ctime != ctime:
        return Change.ATTRIB
    return Change.NONE


def compare_stat(before: Fingerprint | None, st: os.stat_result) -> Change:
    return compare(before, st.st_size, st.st_mtime, st.st_ctime, st.st_ino)


# -- document ------------------------------------------------------------------------
_INSIDE_LEVELS = (Level.AREA, Level.INSIDE)
_INSIDE = Level.INSIDE.value
#: What the files of one directory inside a visit share: the start of their inner path,
#: their layout fields but the inner path, and their access groups.
_Directory = tuple[str, dict[str, Any], tuple[str, ...]]


class Documents:
    """Builds documents from stat results: exactly :func:`catalogd.document.document_from_stat`
    of :func:`classify`, with the classification of a file's directory computed once for
    all the files in it (a file inside a visit differs from its directory only in its
    path, name and inner path)."""

    def __init__(
        self, layout: LayoutConfig, names: NameCache, clock: Callable[[], float] = time.time
    ) -> None:
        self.layout = layout
        self.names = names
        self.clock = clock
        self._dirs: dict[str, _Directory | None] = {}

    def _directory(self, directory: str) -> _Directory | None:
        try:
            return self._dirs[directory]
        except KeyError:
            pass
        if len(self._dirs) > 100_000:
            self._dirs.clear()
        location = classify(directory, self.layout)
        value: _Directory | None = None
        if location.level in _INSIDE_LEVELS:
            common = _fields(location)
            del common["inner_path"]
            groups = access_groups(location, self.layout, is_dir=False)
            value = (f"{location.inner_path}/", common, groups)
        self._dirs[directory] = value
        return value

    def directory_of(self, path: str) -> _Directory | None:
        """What the files of ``path``'s directory inside a visit share (see
        :meth:`from_file_stat`), or None when ``path`` is not such a file."""
        directory, name = posixpath.split(path)
        return self._directory(directory) if name and "//" not in path else None

    def build(
        self, path: str, st: os.stat_result, *, indexed_at: float | None = None
    ) -> FileDocument:
        """The document for one regular file, without metadata yet."""
        return self.from_file_stat(file_stat(path, st), indexed_at=indexed_at)

    def from_file_stat(self, fs: FileStat, *, indexed_at: float | None = None) -> FileDocument:
        """:meth:`build` from the walk's stat tuple of a regular file."""
        path, mode, ino, dev, _, uid, gid, size, mtime, ctime = fs
        directory, name = posixpath.split(path)
        cached = self._directory(directory) if name and "//" not in path else None
        if cached is None:
            location = classify(path, self.layout)
            fields = _fields(location)
            inner_path = fields.pop("inner_path")
            level = location.level.value
            groups = access_groups(location, self.layout, is_dir=stat.S_ISDIR(mode))
            name = os.path.basename(path)
        else:
            inner, fields, groups = cached
            inner_path = inner + name
            level = _INSIDE
        names = self.names
        return FileDocument(
            id=document_id(path),
            path=path,
            name=name,
            size=size,
            mtime=mtime,
            ctime=ctime,
            inode=ino,
            dev=dev,
            uid=uid,
            gid=gid,
            owner=names.owner(uid),
            group=names.group(gid),
            mode=mode,
            level=level,
            access_groups=groups,
            inner_path=inner_path,
            indexed_at=self.clock() if indexed_at is None else indexed_at,
            **fields,
        )


class RowMaker:
    """The scan's document stage, run in the walking children (``on_part`` of
    :func:`tree_pass`; forked with the scan's state: the stored fingerprints, the
    layout, the name cache): each part's new and changed files (all with ``refresh``)
    that the indexers will not read get their documents built and encoded for the store
    there (``encode``: the SQLite store's :func:`~catalogd.store.sqlite_schema.doc_row`),
    and move from ``part.files`` into ``part.rows``. The caller hands the rows to the
    store as they are; the other files (unchanged, changed in their attributes only,
    for the indexers, or whose document the store refuses) stay in ``part.files`` for
    the caller's own stages, so every file takes the same decisions as before.

    So the process with the store's writer thread builds no documents: that thread then
    no longer waits for the GIL between rows (measured beside a busy thread: 7x slower)."""

    def __init__(
        self,
        documents: Documents,
        encode: Callable[[FileDocument], Any],
        known: Mapping[str, Fingerprint],
        *,
        refresh: bool,
        extract_suffixes: frozenset[str] | None,
        plain: PlainEncoder | None = None,
    ) -> None:
        self.documents = documents
        self.encode = encode
        #: ``encode`` of the documents without metadata of one directory's files, from
        #: their stat facts (the SQLite store's PlainRows): tried first.
        self.plain = plain
        self._plain: dict[str, Any] = {}
        self.known = known
        self.refresh = refresh
        #: With indexers: the suffixes of their files (and the probed ones go to them).
        self.extract_suffixes = extract_suffixes

    def __call__(self, part: AuditPart) -> None:
        extract = self.extract_suffixes
        signed = frozenset(part.hdf5)
        known, refresh = self.known, self.refresh
        build, encode = self.documents.from_file_stat, self.encode
        keep: list[FileStat] = []
        rows = part.rows
        for fs in part.files:
            path = fs[0]
            if extract is not None and (
                path in signed or os.path.splitext(path)[1].lower() in extract
            ):
                keep.append(fs)
                continue
            if not refresh:
                change = compare(known.get(path), fs[7], fs[8], fs[9], fs[2])
                if change is Change.NONE or change is Change.ATTRIB:
                    keep.append(fs)
                    continue
            row = self._plain_row(fs) if self.plain is not None else None
            if row is not None:
                rows.append((path, row))
                continue
            try:
                rows.append((path, encode(build(fs))))
            except StoreError:  # the caller's put says why, as before
                keep.append(fs)
        part.files = keep

    def _plain_row(self, fs: FileStat) -> Any:
        """The ``plain`` row of ``fs``, or None (then ``encode`` of its document)."""
        assert self.plain is not None
        directory = fs[0].rpartition("/")[0]
        encoder = self._plain.get(directory)
        if encoder is None:
            shared = self.documents.directory_of(fs[0])
            if shared is None:
                return None
            if len(self._plain) > 10_000:
                self._plain.clear()
            encoder = self._plain[directory] = self.plain(*shared)
        names, documents = self.documents.names, self.documents
        return encoder.row(fs, names.owner(fs[5]), names.group(fs[6]), documents.clock())


class PlainRow(Protocol):
    def row(self, fs: FileStat, owner: str | None, group: str | None, indexed_at: float) -> Any:
        """The encoded document of ``fs`` without metadata, or None."""


#: Makes the :class:`PlainRow` of one directory from what its files share.
PlainEncoder = Callable[[str, dict[str, Any], tuple[str, ...]], PlainRow]


def _fields(location: Location) -> dict[str, Any]:
    return dict(location.fields())


def keep_metadata(doc: FileDocument, previous: FileDocument) -> FileDocument:
    """``doc`` (fresh stat facts) with what the indexers read for ``previous``."""
    return doc.with_changes(
        kind=previous.kind,
        entries=previous.entries,
        metadata=previous.metadata,
        error=previous.error,
    )


# -- extract -------------------------------------------------------------------------
def wants_extraction(path: str, size: int, hdf5_suffixes: Collection[str]) -> bool:
    """Whether the indexers should read ``path`` (see :func:`indexers.base.wants_extraction`)."""
    from indexers.base import wants_extraction as indexers_wants

    return indexers_wants(path, size, hdf5_suffixes)


def merge_result(doc: FileDocument, result: ExtractResult, indexed_at: float) -> FileDocument:
    """``doc`` with what the indexers read from its file."""
    return doc.with_changes(
        kind=result.kind,
        entries=tuple(result.entries),
        metadata=dict(result.metadata),
        error=result.error,
        indexed_at=indexed_at,
    )


class Extractor(Protocol):
    """What the scan needs of :class:`indexers.registry.Registry`."""

    @property
    def settings(self) -> IndexerSettings: ...

    def extract_many(self, paths: Iterable[str]) -> Iterator[ExtractResult]: ...


def extract_documents(
    registry: Extractor, docs: list[FileDocument], clock: Callable[[], float] = time.time
) -> list[FileDocument]:
    """``docs`` with the metadata the registry read from their files (one batch)."""
    results = {r.path: r for r in registry.extract_many([d.path for d in docs])}
    merged = []
    for doc in docs:
        result = results.get(doc.path)
        if result is None:  # pragma: no cover - the registry answers every path
            merged.append(doc.with_changes(error="the indexers gave no result"))
        else:
            merged.append(merge_result(doc, result, clock()))
    return merged


# -- stat of a tree, with the policy -----------------------------------------------
@dataclass
class TreePass:
    """A walk of a tree, as the pass goes: what it saw so far, and whether it finished."""

    root: str
    root_stat: os.stat_result | None = None
    directories: int = 0
    files: int = 0
    others: int = 0  # links and special files: not catalogued
    findings: list[Violation] = field(default_factory=list)
    #: Findings the walking processes encoded for the store (see RowMaker); recorded
    #: with ``findings`` by record_pass.
    finding_rows: list[Any] = field(default_factory=list)
    #: Directories that could not be listed (nothing below them is taken to be gone).
    unlisted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    complete: bool = False
    #: When the walk started (POSIX time): the ``seen_at`` of its findings.
    started: float = field(default_factory=time.time)


def tree_pass(
    root: str,
    policy: Policy,
    *,
    check: bool = True,
    processes: int = DEFAULT_PROCESSES,
    cross_mounts: bool = False,
    opener: Opener = open_dir,
    stop: threading.Event | None = None,
    result: TreePass | None = None,
    probe_suffixes: frozenset[str] | None = None,
    on_part: Callable[[AuditPart], None] | None = None,
    encode_finding: Callable[[Violation], Any] | None = None,
) -> Generator[AuditPart, None, None]:
    """Walk ``root`` and everything below it; yields the walker's parts (the regular
    files' stat tuples in ``files``, the directories in ``dirs``; ``root`` itself is in
    the first part) while filling ``result``. With ``check``, the policy of every entry is
    checked and the findings gathered in ``result.findings``.

    Raises UsageError when ``root`` is not absolute or cannot be stat'ed or listed; an
    entry below it that cannot be listed is a finding (DP011) and goes into
    ``result.unlisted``. ``result.complete`` is set when the walk was not stopped.
    """
    if not root.startswith("/"):
        raise UsageError(f"the root must be an absolute path, got {root!r}")
    res = result if result is not None else TreePass(root)
    try:
        root_stat = os.lstat(root)
    except OSError as exc:
        raise UsageError(f"cannot read {describe_os_error(exc)}") from None
    res.root_stat = root_stat
    auditor = TreeAuditor(
        policy,
        root_dev=None if cross_mounts else root_stat.st_dev,
        opener=opener,
        collect=True,
        check=check,
        probe_suffixes=probe_suffixes,
        on_part=on_part,
        encode_finding=encode_finding,
    )
    first = AuditPart(entries=1)
    auditor.check_entry(first, root, root_stat, None)
    is_dir = stat.S_ISDIR(root_stat.st_mode)
    if is_dir:
        first.dirs.append(root)
        try:
            os.close(opener(root))
        except OSError as exc:
            raise UsageError(f"cannot read {describe_os_error(exc)}") from None
    elif stat.S_ISREG(root_stat.st_mode):
        first.files.append(file_stat(root, root_stat))
    else:
        first.others += 1
    auditor.finish(first)
    parts: Iterable[AuditPart] = [first]
    if is_dir:
        parts = _chain(first, iter_tree(auditor, root, processes=processes, stop=stop))
    for part in parts:
        res.directories += len(part.dirs)
        res.files += len(part.files) + len(part.rows)
        res.others += part.others
        res.findings.extend(part.findings)
        res.finding_rows.extend(part.finding_rows)
        res.unlisted.extend(part.unlisted)
        res.errors.extend(part.errors)
        yield part
    res.complete = not (stop is not None and stop.is_set())


def _chain(first: AuditPart, rest: Iterator[AuditPart]) -> Iterator[AuditPart]:
    yield first
    yield from rest


def gone_after_pass(known: Iterable[Fingerprint], unlisted: Collection[str]) -> list[Fingerprint]:
    """Of the documents a complete pass did not see, those it may take to be gone: none
    below a directory it could not list (their files may still exist)."""
    if not unlisted:
        return list(known)
    return [fp for fp in known if not any(under_prefix(fp.path, d) for d in unlisted)]


def record_pass(store: Store, tree: TreePass, *, staged: bool = False) -> None:
    """Record what a complete pass of ``tree.root`` found, as the daemon does per path:
    a finding seen again keeps its first_seen and takes the pass's time as last_seen, a
    new one is opened, an open one the pass no longer found is resolved. Open records
    below a directory the pass could not list are kept open (they could not be looked
    at: the directory itself is a finding). With ``staged``, the store was handed
    ``tree.finding_rows`` as the walk went (SQLiteStore.staging)."""
    findings = list(tree.findings)
    encoded = tree.finding_rows
    if encoded and not isinstance(store, EncodedAudit):
        raise TypeError("encoded findings come from the encoder of the store they go to")
    if tree.unlisted:
        seen = {v.key for v in findings}
        seen_rows = {tuple(row[:2]) for row in encoded}
        for directory in tree.unlisted:
            for v in store.violations(path_prefix=directory):
                if v.path == directory or v.key in seen:
                    continue
                if encoded and tuple(store.encode_finding(v)[:2]) in seen_rows:  # type: ignore[attr-defined]
                    continue
                findings.append(v)
                seen.add(v.key)
    if not encoded and not staged:
        store.record_audit(findings, scope=tree.root, seen_at=tree.started, recursive=True)
        return
    assert isinstance(store, EncodedAudit)
    rows = [store.encode_finding(v) for v in findings]
    if staged:
        store.record_audit_rows(rows, scope=tree.root, seen_at=tree.started, staged=True)
    else:
        rows = encoded + rows
        store.record_audit_rows(rows, scope=tree.root, seen_at=tree.started, recursive=True)


@runtime_checkable
class EncodedAudit(Protocol):
    """A store that records findings encoded by the walking processes (SQLite): the
    first two values of an encoded finding are its key (path and rule), encoded."""

    def encode_finding(self, v: Violation) -> Any: ...

    def record_audit_rows(
        self,
        rows: list[Any],
        *,
        scope: str,
        seen_at: float,
        recursive: bool = True,
        staged: bool = False,
    ) -> None: ...


__all__ = [
    "Change",
    "Documents",
    "Extractor",
    "RowMaker",
    "FileStat",
    "TreePass",
    "as_stat",
    "compare",
    "compare_stat",
    "extract_documents",
    "gone_after_pass",
    "keep_metadata",
    "merge_result",
    "policy_findings",
    "record_pass",
    "tree_pass",
    "wants_extraction",
]
