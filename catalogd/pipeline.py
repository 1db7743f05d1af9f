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
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from catalogd.document import FileDocument, document_id
from catalogd.errors import UsageError, describe_os_error
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
from indexers.base import ExtractResult
from indexers.base import wants_extraction as _wants_extraction
from indexers.registry import Registry

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
        self._dirs: dict[str, tuple[Location, dict[str, Any]] | None] = {}

    def _directory(self, directory: str) -> tuple[Location, dict[str, Any]] | None:
        try:
            return self._dirs[directory]
        except KeyError:
            pass
        if len(self._dirs) > 100_000:
            self._dirs.clear()
        location = classify(directory, self.layout)
        value: tuple[Location, dict[str, Any]] | None = None
        if location.level in _INSIDE_LEVELS:
            common: dict[str, Any] = dict(location.fields())
            common["access_groups"] = access_groups(location, self.layout, is_dir=False)
            value = (location, common)
        self._dirs[directory] = value
        return value

    def build(
        self, path: str, st: os.stat_result, *, indexed_at: float | None = None
    ) -> FileDocument:
        """The document for one regular file, without metadata yet."""
        directory, name = posixpath.split(path)
        cached = self._directory(directory) if name and "//" not in path else None
        if cached is None:
            location = classify(path, self.layout)
            fields: dict[str, Any] = dict(location.fields())
            groups = access_groups(location, self.layout, is_dir=stat.S_ISDIR(st.st_mode))
            level = location.level.value
        else:
            dir_location, common = cached
            fields = dict(common)
            groups = fields.pop("access_groups")
            fields["inner_path"] = f"{dir_location.inner_path}/{name}"
            level = Level.INSIDE.value
        names = self.names
        return FileDocument(
            id=document_id(path),
            path=path,
            name=name if cached is not None else os.path.basename(path),
            size=st.st_size,
            mtime=st.st_mtime,
            ctime=st.st_ctime,
            inode=st.st_ino,
            dev=st.st_dev,
            uid=st.st_uid,
            gid=st.st_gid,
            owner=names.owner(st.st_uid),
            group=names.group(st.st_gid),
            mode=st.st_mode,
            level=level,
            access_groups=groups,
            indexed_at=self.clock() if indexed_at is None else indexed_at,
            **fields,
        )


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
    return _wants_extraction(path, size, hdf5_suffixes)


def merge_result(doc: FileDocument, result: ExtractResult, indexed_at: float) -> FileDocument:
    """``doc`` with what the indexers read from its file."""
    return doc.with_changes(
        kind=result.kind,
        entries=tuple(result.entries),
        metadata=dict(result.metadata),
        error=result.error,
        indexed_at=indexed_at,
    )


def extract_documents(
    registry: Registry, docs: list[FileDocument], clock: Callable[[], float] = time.time
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
    if probe_suffixes is not None:
        auditor.probe(first)
    parts: Iterable[AuditPart] = [first]
    if is_dir:
        parts = _chain(first, iter_tree(auditor, root, processes=processes, stop=stop))
    for part in parts:
        res.directories += len(part.dirs)
        res.files += len(part.files)
        res.others += part.others
        res.findings.extend(part.findings)
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


def record_pass(store: Store, tree: TreePass) -> None:
    """Record what a complete pass of ``tree.root`` found, as the daemon does per path:
    a finding seen again keeps its first_seen and takes the pass's time as last_seen, a
    new one is opened, an open one the pass no longer found is resolved. Open records
    below a directory the pass could not list are kept open (they could not be looked
    at: the directory itself is a finding)."""
    findings = list(tree.findings)
    if tree.unlisted:
        seen = {v.key for v in findings}
        for directory in tree.unlisted:
            for v in store.violations(path_prefix=directory):
                if v.path != directory and v.key not in seen:
                    findings.append(v)
                    seen.add(v.key)
    store.record_audit(findings, scope=tree.root, seen_at=tree.started, recursive=True)


__all__ = [
    "Change",
    "Documents",
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
