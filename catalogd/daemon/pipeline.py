"""One path, one decision: lstat, classify, policy, then store, extract, defer or delete.

:meth:`Pipeline.handle` takes the coalesced :class:`~catalogd.daemon.coalesce.Work` for a
path and says what to do with it as a :class:`Step`; it checks the policy itself (and
records findings), but leaves the store writes and the extraction to its caller (the
service), which batches them. Content is re-extracted only when the file's fingerprint
(size, mtime, inode) changed; a change of ctime alone (owner, group, mode) keeps the
metadata already extracted. Which master a data file belongs to is the store's to decide
(:mod:`catalogd.store.links`), so a data file re-read alone keeps its master.
"""

from __future__ import annotations

import enum
import logging
import os
import stat
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from catalogd.daemon import readiness
from catalogd.daemon.coalesce import Work
from catalogd.document import FileDocument, document_id
from catalogd.errors import CatalogdError, describe_os_error
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig
from catalogd.pipeline import (
    Change,
    Documents,
    compare_stat,
    keep_metadata,
    merge_result,
    policy_findings,
    wants_extraction,
)
from catalogd.policy import Policy
from catalogd.policy.walker import Lstat
from catalogd.store.base import Fingerprint, Store
from catalogd.store.query import under_prefix

log = logging.getLogger(__name__)

#: Fingerprints of recently stored documents kept in memory (the store's writes may
#: not be visible yet); cleared when it grows past this.
RECENT_MAX = 200_000
#: The shortest wait before a file that is not ready is looked at again.
MIN_RETRY_S = 0.2


class StepKind(enum.Enum):
    NOTHING = "nothing"  # unchanged, or not something the catalogue keeps
    STORE = "store"  # a document to store as it is
    EXTRACT = "extract"  # a document to store once the indexers have read the file
    DELETE = "delete"  # documents of paths that are gone
    DEFER = "defer"  # the writer is not done: look again after ``delay``
    SUBTREE = "subtree"  # a directory whose subtree must be compared with the store


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    work: Work
    doc: FileDocument | None = None
    ids: tuple[str, ...] = ()
    delay: float = 0.0
    reason: str = ""


@dataclass
class PipelineStats:
    handled: int = 0
    policy_checks: int = 0
    attrib_only: int = 0
    unchanged: int = 0
    deferred: int = 0
    forced: int = 0  # indexed although a writer seemed to hold it (writer_timeout_s)
    errors: list[str] = field(default_factory=list)


class Pipeline:
    """Decides, for one path at a time, what the catalogue needs. One thread uses it."""

    def __init__(
        self,
        store: Store,
        layout: LayoutConfig,
        policy: Policy,
        *,
        hdf5_suffixes: Collection[str],
        quiet_period_s: float,
        writer_timeout_s: float,
        names: NameCache | None = None,
        open_violations: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        lstat: Lstat = os.lstat,
    ) -> None:
        self.store = store
        self.layout = layout
        self.policy = policy
        self.hdf5_suffixes = frozenset(s.lower() for s in hdf5_suffixes)
        self.quiet_period_s = quiet_period_s
        self.writer_timeout_s = writer_timeout_s
        self.names = names or NameCache()
        self.clock = clock
        self.documents = Documents(layout, self.names, clock)
        self.monotonic = monotonic
        self._lstat = lstat
        #: Paths with open violations: a clean check of any other path records nothing.
        self.open_violations: set[str] = set(open_violations)
        self._recent: dict[str, Fingerprint | None] = {}
        self.stats = PipelineStats()

    # -- what the store knows ----------------------------------------------------------

    def remember(self, doc: FileDocument) -> None:
        """``doc`` was handed to the store (its write may not be visible yet)."""
        if len(self._recent) >= RECENT_MAX:
            self._recent.clear()
        self._recent[doc.path] = Fingerprint.of_document(doc)

    def forget(self, paths: Iterable[str]) -> None:
        for path in paths:
            self._recent[path] = None

    def forget_all(self) -> None:
        self._recent.clear()

    def _previous(self, path: str) -> tuple[Fingerprint | None, FileDocument | None]:
        if path in self._recent:
            fp = self._recent[path]
            if fp is None:
                return None, None
            return fp, None
        doc = self.store.get(document_id(path))
        return (Fingerprint.of_document(doc) if doc else None), doc

    # -- the decision ------------------------------------------------------------------

    def handle(self, work: Work, *, locks: Collection[readiness.LockKey] = ()) -> Step:
        """What to do for ``work``, from the path as it is now."""
        self.stats.handled += 1
        path = work.path
        try:
            st = self._lstat(path)
        except FileNotFoundError:
            return self._gone(work)
        except NotADirectoryError:
            return self._gone(work)
        except OSError as exc:
            self.stats.errors.append(describe_os_error(exc))
            log.warning("cannot stat %s", describe_os_error(exc))
            return Step(StepKind.NOTHING, work, reason="cannot stat")
        self.check_policy(path, st)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if work.subtree or work.gone:
                return Step(StepKind.SUBTREE, work)
            return Step(StepKind.NOTHING, work)
        if not stat.S_ISREG(mode):
            # A symbolic link or special file is not catalogued; one may have replaced a
            # file that was.
            return Step(StepKind.DELETE, work, ids=(document_id(path),))
        return self._file(work, st, locks)

    def _gone(self, work: Work) -> Step:
        path = work.path
        ids = [document_id(path)]
        if work.is_dir or work.subtree:
            ids.extend(fp.id for fp in self.store.fingerprints(path_prefix=path))
            self._recent.clear()
        self.resolve(path, recursive=work.is_dir or work.subtree)
        return Step(StepKind.DELETE, work, ids=tuple(dict.fromkeys(ids)))

    def _file(self, work: Work, st: os.stat_result, locks: Collection[readiness.LockKey]) -> Step:
        path = work.path
        now_fp = Fingerprint.of_stat(document_id(path), path, st)
        previous, prev_doc = self._previous(path)
        change = compare_stat(previous, st)
        if change is Change.NONE:
            self.stats.unchanged += 1
            return Step(StepKind.NOTHING, work, reason="unchanged")
        if change is Change.ATTRIB:
            # Owner, group or mode changed: keep what the indexers read.
            if prev_doc is None:
                prev_doc = self.store.get(now_fp.id)
            if prev_doc is not None:
                self.stats.attrib_only += 1
                doc = keep_metadata(self.build(path, st), prev_doc)
                return Step(StepKind.STORE, work, doc=doc, reason="attributes only")
        doc = self.build(path, st)
        is_hdf5 = wants_extraction(path, st.st_size, self.hdf5_suffixes)
        ready = readiness.check(
            path,
            st,
            closed=work.closed,
            now=self.clock(),
            quiet_period_s=self.quiet_period_s,
            locks=locks,
            is_hdf5=is_hdf5,
        )
        if not ready.ready:
            waited = self.monotonic() - work.first_seen
            if waited < self.writer_timeout_s:
                self.stats.deferred += 1
                delay = max(MIN_RETRY_S, self.quiet_period_s)
                return Step(StepKind.DEFER, work, delay=delay, reason=ready.reason)
            self.stats.forced += 1
            log.warning(
                "indexing %s although %s (waited %.0f s, writer_timeout_s)",
                path,
                ready.reason,
                waited,
            )
        if is_hdf5:
            return Step(StepKind.EXTRACT, work, doc=doc)
        return Step(StepKind.STORE, work, doc=doc)

    def build(self, path: str, st: os.stat_result) -> FileDocument:
        return self.documents.build(path, st)

    # -- the policy --------------------------------------------------------------------

    def check_policy(self, path: str, st: os.stat_result) -> None:
        """Check one entry and record the findings (only when there are some now, or
        were before: a clean path that was clean costs no write)."""
        self.stats.policy_checks += 1
        try:
            findings = policy_findings(self.policy, path, st)
        except (OSError, CatalogdError) as exc:
            log.warning("policy check of %s failed: %s", path, exc)
            return
        if findings or path in self.open_violations:
            self.store.record_audit(findings, scope=path, seen_at=self.clock(), recursive=False)
            if findings:
                self.open_violations.add(path)
            else:
                self.open_violations.discard(path)

    def resolve(self, path: str, *, recursive: bool) -> None:
        """The path is gone: resolve its open violations (and those below it)."""
        if recursive:
            hit = {p for p in self.open_violations if under_prefix(p, path)}
        else:
            hit = {path} & self.open_violations
        if hit:
            self.store.record_audit([], scope=path, seen_at=self.clock(), recursive=recursive)
            self.open_violations -= hit


__all__ = ["Pipeline", "PipelineStats", "Step", "StepKind", "merge_result"]
