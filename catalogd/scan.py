"""The one-shot scan: walk, stat, classify, (extract,) store.

The same stages the daemon drives for single paths, run over a whole tree. Documents
are written in batches; after a complete pass, documents under the root whose files are
gone are deleted (never below a directory that could not be listed, whose files may
still exist).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from catalogd.document import FileDocument, document_from_stat
from catalogd.errors import UsageError, describe_os_error
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig, classify, normalise_root
from catalogd.store.base import Store
from catalogd.store.query import under_prefix
from catalogd.walk import DEFAULT_WORKERS, Lstat, Scandir, WalkEntry, walk

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500
#: Call the progress callback at most this often.
PROGRESS_INTERVAL_S = 0.2


@dataclass
class ScanStats:
    """What a scan saw and did."""

    files: int = 0
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

    def build(self, path: str, st_entry: WalkEntry) -> FileDocument:
        """The document for one regular file."""
        st = st_entry.stat
        assert st is not None
        return document_from_stat(
            path,
            st,
            classify(path, self.layout),
            self.layout,
            owner=self.names.owner(st.st_uid),
            group=self.names.group(st.st_gid),
            indexed_at=self.clock(),
        )

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
                doc = self.build(entry.path, entry)
                seen.add(doc.id)
                batch.append(doc)
                stats.files += 1
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
        if batch:
            self.store.put(batch)
        self.store.flush()
        stats.deleted = self._delete_missing(root, seen, unlisted)
        stats.finished = time.monotonic()
        if progress is not None:
            progress(stats)
        return stats

    def _delete_missing(self, root: str, seen: set[str], unlisted: list[str]) -> int:
        gone = [
            doc.id
            for doc in self.store.iter_documents(path_prefix=root)
            if doc.id not in seen and not any(under_prefix(doc.path, d) for d in unlisted)
        ]
        if gone:
            self.store.delete(gone)
            self.store.flush()
        return len(gone)
