"""The one-shot scan: the stage chain of :mod:`catalogd.pipeline` over a whole tree.

Forked children walk the tree (:func:`catalogd.pipeline.tree_pass`), check the policy of
every entry and send back the stat facts of its files; this process compares each file
with the fingerprint stored for it (:func:`~catalogd.pipeline.compare`), builds the
documents of new and changed files once (:class:`~catalogd.pipeline.Documents`), hands
the files that look like HDF5 to the indexers in batches and writes the documents in
large batches. After a complete pass the scan records the violations it found as the
daemon does (:func:`~catalogd.pipeline.record_pass`: first and last seen, and what is
no longer found is resolved) and deletes the documents of files that are gone (never
below a directory that could not be listed, whose files may still exist).

Files whose fingerprint is unchanged are not written again (as in the daemon); with
``refresh`` every file's document is built and stored again (after a layout change,
say), and HDF5 files are read again.

Masters and their data files need nothing here: the store decides which stored master a
file belongs to, in whatever order the two are written (:mod:`catalogd.store.links`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from catalogd.document import FileDocument
from catalogd.errors import StoreError, UsageError, describe_os_error
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig, normalise_root
from catalogd.pipeline import (
    DEFAULT_PROCESSES,
    Change,
    Documents,
    Extractor,
    RowMaker,
    TreePass,
    compare,
    extract_documents,
    gone_after_pass,
    keep_metadata,
    record_pass,
    tree_pass,
)
from catalogd.policy import Policy, make_policy
from catalogd.policy.walker import Opener, open_dir
from catalogd.store.base import Fingerprint, Store
from catalogd.store.sqlite import FindingStage, SQLiteStore
from catalogd.store.sqlite_schema import DocRow, ViolationRow

if TYPE_CHECKING:
    from indexers.base import ExtractResult
    from indexers.registry import Registry
    from indexers.settings import IndexerSettings

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 5000
#: Files handed to the registry at once (enough to keep its workers busy).
EXTRACT_BATCH = 64
#: Call the progress callback at most this often.
PROGRESS_INTERVAL_S = 0.2


@dataclass
class ScanStats:
    """What a scan saw and did."""

    files: int = 0
    stored: int = 0  # documents written (new, changed, or all with ``refresh``)
    unchanged: int = 0  # files whose stored fingerprint is the same: not written again
    extracted: int = 0  # files the indexers read
    extraction_failures: int = 0  # of those, files that could not be read
    directories: int = 0
    skipped: int = 0  # symbolic links, sockets, devices: not catalogued
    deleted: int = 0
    violations: int = 0  # findings of the policy check (recorded in the store)
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


class OnDemandRegistry:
    """The installed indexers (:meth:`indexers.registry.Registry.from_entry_points`),
    loaded when the scan first hands files to them: a tree without HDF5 files does not
    pay for importing them (h5py, numpy: ~0.3 s of the command's start-up). With
    ``[indexers] enabled`` they are loaded at once, so that a name that is not
    installed is an error before the walk, as before."""

    def __init__(self, settings: IndexerSettings) -> None:
        self.settings = settings
        self._registry: Registry | None = None
        if settings.enabled is not None:
            self._load()

    def _load(self) -> Registry:
        if self._registry is None:
            from indexers.registry import Registry

            self._registry = Registry.from_entry_points(settings=self.settings)
        return self._registry

    def extract_many(self, paths: Iterable[str]) -> Iterator[ExtractResult]:
        return self._load().extract_many(paths)

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()


class Scanner:
    """Scans trees into one store with one layout and policy; reusable."""

    def __init__(
        self,
        store: Store,
        layout: LayoutConfig,
        *,
        policy: Policy | None = None,
        workers: int = DEFAULT_PROCESSES,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cross_mounts: bool = False,
        refresh: bool = False,
        names: NameCache | None = None,
        clock: Callable[[], float] = time.time,
        opener: Opener = open_dir,
        registry: Extractor | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.names = names or NameCache()
        self.policy = policy if policy is not None else make_policy(None, layout, self.names)
        self.workers = workers
        self.batch_size = batch_size
        self.cross_mounts = cross_mounts
        self.refresh = refresh
        self.clock = clock
        self._opener = opener
        self.registry = registry
        self.documents = Documents(layout, self.names, clock)

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
        try:
            os.lstat(root)
        except OSError as exc:
            raise UsageError(f"cannot scan {describe_os_error(exc)}") from None
        outage: StoreError | None = None
        try:
            self.store.flush()
            known = {fp.path: fp for fp in self.store.fingerprints(path_prefix=root)}
        except StoreError as exc:
            outage = exc
            # The store cannot be read (an outage): every file is written, so the spool
            # keeps the whole pass for the next scan; the error ends the scan after it.
            log.warning("cannot read what the store holds (%s): writing every file", exc)
            known = {}
        tree = TreePass(root)
        hdf5_suffixes = self._hdf5_suffixes()
        row_store = self.store if isinstance(self.store, SQLiteStore) else None
        maker = None
        if row_store is not None:
            extract = hdf5_suffixes if self.registry is not None else None
            maker = RowMaker(
                self.documents,
                row_store.encode,
                known,
                refresh=self.refresh,
                extract_suffixes=extract,
                plain=row_store.plain_rows,
            )
        # A first scan into an empty catalogue: indexes and full text after the load.
        bulk = row_store is not None and not known
        log.debug(
            "scanning %s: %d files of it in the catalogue already%s",
            root,
            len(known),
            "; a first scan: indexes and full text built after the load" if bulk else "",
        )
        loading = row_store.bulk_load() if row_store is not None and bulk else nullcontext()
        with loading, row_store.staging() if row_store is not None else nullcontext() as stage:
            self._walk(root, stats, tree, known, maker, row_store, progress, stage)
        self.store.flush()
        stats.finished = time.monotonic()
        if progress is not None:
            progress(stats)
        if outage is not None:  # the pass is in the spool; nothing was deleted
            raise outage
        return stats

    def _walk(
        self,
        root: str,
        stats: ScanStats,
        tree: TreePass,
        known: dict[str, Fingerprint],
        maker: RowMaker | None,
        row_store: SQLiteStore | None,
        progress: Callable[[ScanStats], None] | None,
        stage: FindingStage | None,
    ) -> None:
        """The pass itself: walk, store, record the findings, delete what is gone.
        ``stage`` takes the encoded findings as they come (SQLiteStore.staging)."""
        batch: list[FileDocument] = []
        pending: list[FileDocument] = []  # waiting for the indexers
        hdf5_suffixes = self._hdf5_suffixes()
        build = self.documents.from_file_stat
        refresh = self.refresh
        last_report = 0.0
        rows: list[DocRow] = []
        staged: list[ViolationRow] = []
        parts = tree_pass(
            root,
            self.policy,
            processes=self.workers,
            cross_mounts=self.cross_mounts,
            opener=self._opener,
            result=tree,
            probe_suffixes=hdf5_suffixes if self.registry is not None else None,
            on_part=maker,
            encode_finding=row_store.encode_finding if row_store is not None else None,
        )
        for part in parts:
            if stage is not None and part.finding_rows:
                staged.extend(part.finding_rows)
                if len(staged) >= self.batch_size:
                    stage(staged)
                    staged = []
            if part.rows:
                assert row_store is not None
                for path, row in part.rows:
                    known.pop(path, None)
                    rows.append(row)
                if len(rows) >= self.batch_size:
                    row_store.put_rows(rows)
                    stats.stored += len(rows)
                    rows = []
            signed = set(part.hdf5)
            for fs in part.files:
                path, _, inode, _, _, _, _, size, mtime, ctime = fs
                before = known.pop(path, None)
                change = Change.NEW if refresh else compare(before, size, mtime, ctime, inode)
                if change is Change.NONE:
                    stats.unchanged += 1
                    continue
                doc = build(fs)
                previous = None
                if change is Change.ATTRIB and before is not None:
                    previous = self.store.get(before.id)
                if previous is not None:  # owner, group or mode: keep what was read
                    batch.append(keep_metadata(doc, previous))
                elif self.registry is not None and (
                    path in signed or os.path.splitext(path)[1].lower() in hdf5_suffixes
                ):
                    pending.append(doc)
                    if len(pending) >= EXTRACT_BATCH:
                        batch.extend(self._extract(pending, stats))
                        pending = []
                else:
                    batch.append(doc)
                if len(batch) >= self.batch_size:
                    self._put(batch, stats)
                    batch = []
            stats.files = tree.files
            stats.directories = tree.directories
            stats.skipped = tree.others
            if progress is not None:
                now = time.monotonic()
                if now - last_report >= PROGRESS_INTERVAL_S:
                    last_report = now
                    progress(stats)
        if pending:
            batch.extend(self._extract(pending, stats))
        if batch:
            self._put(batch, stats)
        if rows:
            assert row_store is not None
            row_store.put_rows(rows)
            stats.stored += len(rows)
        if staged:
            assert stage is not None
            stage(staged)
        for error in tree.errors:
            log.warning("%s", error)
        stats.errors = list(tree.errors)
        stats.violations = len(tree.findings) + len(tree.finding_rows)
        self.store.flush()
        if tree.complete:
            record_pass(self.store, tree, staged=stage is not None)
            gone = gone_after_pass(known.values(), tree.unlisted)
            if gone:
                self.store.delete([fp.id for fp in gone])
            stats.deleted = len(gone)

    def _hdf5_suffixes(self) -> frozenset[str]:
        settings = self.registry.settings if self.registry is not None else None
        return frozenset(s.lower() for s in (settings.hdf5_suffixes if settings else ()))

    def _put(self, batch: list[FileDocument], stats: ScanStats) -> None:
        self.store.put(batch)
        stats.stored += len(batch)

    def _extract(self, docs: list[FileDocument], stats: ScanStats) -> list[FileDocument]:
        assert self.registry is not None
        merged = extract_documents(self.registry, docs, self.clock)
        stats.extracted += len(merged)
        stats.extraction_failures += sum(1 for d in merged if d.error is not None)
        return merged
