"""The one-shot scan: walk, stat, classify, extract, store.

The same stages the daemon drives for single paths, run over a whole tree. Files that
look like HDF5 (by signature, or by a suffix that claims HDF5) go to the indexers'
registry in batches, so its worker processes stay busy; everything else is stored with
kind ``other`` straight away. Documents are written in batches; after a complete pass,
documents under the root whose files are gone are deleted (never below a directory
that could not be listed, whose files may still exist).

Masters and their data files need nothing here: the store decides which stored master a
file belongs to, in whatever order the two are written (:mod:`catalogd.store.links`).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from catalogd.document import DocumentBuilder, FileDocument
from catalogd.errors import UsageError, describe_os_error
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig, normalise_root
from catalogd.store.base import Store
from catalogd.store.query import under_prefix
from catalogd.walk import DEFAULT_WORKERS, Lstat, Scandir, walk
from indexers.base import wants_extraction
from indexers.registry import Registry

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
#: Files handed to the registry at once (enough to keep its workers busy).
EXTRACT_BATCH = 64
#: Call the progress callback at most this often.
PROGRESS_INTERVAL_S = 0.2


@dataclass
class ScanStats:
    """What a scan saw and did."""

    files: int = 0
    extracted: int = 0  # files the indexers read
    extraction_failures: int = 0  # of those, files that could not be read
    directories: int = 0
    skipped: int = 0  # symbolic links, sockets, devices: not catalogued
    deleted: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Files per second."""
        return self.files / self.elapsed if self.elapsed > 0 else 0.0


class Scanner:
    """Scans trees into one store with one layout; reusable."""

    def __init__(
        self,
        store: Store,
        layout: LayoutConfig,
        *,
        workers: int = DEFAULT_WORKERS,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cross_mounts: bool = False,
        names: NameCache | None = None,
        clock: Callable[[], float] = time.time,
        scandir: Scandir = os.scandir,
        lstat: Lstat = os.lstat,
        registry: Registry | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.workers = workers
        self.batch_size = batch_size
        self.cross_mounts = cross_mounts
        self.names = names or NameCache()
        self.clock = clock
        self._scandir = scandir
        self._lstat = lstat
        self.registry = registry
        self.documents = DocumentBuilder(layout, self.names, clock)

    def build(self, path: str, st: os.stat_result) -> FileDocument:
        """The document for one regular file."""
        return self.documents.build(path, st)

    def scan(
        self,
        root: str,
        *,
        progress: Callable[[ScanStats], None] | None = None,
    ) -> ScanStats:
        """Scan ``root`` into the store and return what was done."""
        if not root.startswith("/"):
            raise UsageError(f"scan root must be an absolute path, got {root!r}")
        root = normalise_root(root)
        stats = ScanStats()
        seen: set[str] = set()
        unlisted: list[str] = []
        batch: list[FileDocument] = []
        pending: list[FileDocument] = []  # waiting for the indexers
        last_report = 0.0
        try:
            self._lstat(root)
        except OSError as exc:
            raise UsageError(f"cannot scan {describe_os_error(exc)}") from None
        entries = walk(
            root,
            workers=self.workers,
            cross_mounts=self.cross_mounts,
            scandir=self._scandir,
            lstat=self._lstat,
        )
        for entry in entries:
            if entry.error is not None:
                stats.errors.append(describe_os_error(entry.error))
                log.warning("cannot read %s", describe_os_error(entry.error))
                if entry.is_dir:
                    unlisted.append(entry.path)
                continue
            assert entry.stat is not None
            mode = entry.stat.st_mode
            if entry.is_dir:
                stats.directories += 1
            elif stat.S_ISREG(mode):
                doc = self.build(entry.path, entry.stat)
                seen.add(doc.id)
                stats.files += 1
                if self.wants_extraction(doc.path, doc.size):
                    pending.append(doc)
                    if len(pending) >= EXTRACT_BATCH:
                        batch.extend(self.extract(pending, stats))
                        pending = []
                else:
                    batch.append(doc)
                if len(batch) >= self.batch_size:
                    self.store.put(batch)
                    batch = []
            else:
                stats.skipped += 1
            if progress is not None:
                now = time.monotonic()
                if now - last_report >= PROGRESS_INTERVAL_S:
                    last_report = now
                    progress(stats)
        if pending:
            batch.extend(self.extract(pending, stats))
        if batch:
            self.store.put(batch)
        self.store.flush()
        stats.deleted = self._delete_missing(root, seen, unlisted)
        stats.finished = time.monotonic()
        if progress is not None:
            progress(stats)
        return stats

    def wants_extraction(self, path: str, size: int) -> bool:
        """Whether the registry should read ``path`` (see indexers.base)."""
        if self.registry is None:
            return False
        return wants_extraction(path, size, self.registry.settings.hdf5_suffixes)

    def extract(self, docs: list[FileDocument], stats: ScanStats) -> list[FileDocument]:
        """``docs`` with the metadata the registry read from their files."""
        assert self.registry is not None
        results = {r.path: r for r in self.registry.extract_many([d.path for d in docs])}
        merged = []
        for doc in docs:
            result = results.get(doc.path)
            if result is None:  # pragma: no cover - the registry answers every path
                merged.append(doc.with_changes(error="the indexers gave no result"))
                continue
            stats.extracted += 1
            stats.extraction_failures += not result.ok
            merged.append(
                doc.with_changes(
                    kind=result.kind,
                    entries=tuple(result.entries),
                    metadata=dict(result.metadata),
                    error=result.error,
                    indexed_at=self.clock(),
                )
            )
        return merged

    def _delete_missing(self, root: str, seen: set[str], unlisted: list[str]) -> int:
        gone = [
            fp.id
            for fp in self.store.fingerprints(path_prefix=root)
            if fp.id not in seen and not any(under_prefix(fp.path, d) for d in unlisted)
        ]
        if gone:
            self.store.delete(gone)
            self.store.flush()
        return len(gone)
