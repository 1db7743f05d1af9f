"""The catalogue store contract.

A store keeps :class:`~catalogd.document.FileDocument` values by id and answers
:class:`SearchQuery` values. Every implementation (memory, SQLite, Elasticsearch) obeys
the same contract, checked by one test suite (``tests/test_store_contract.py``):

* ``put`` is an idempotent upsert by ``id``; ``delete`` of an unknown id is a no-op.
* Writes may be applied asynchronously; after ``flush()`` returns, every earlier write
  is durable and visible to ``get``/``search``/``iter_documents``. (The exception: a
  :class:`~catalogd.store.spool.SpoolingStore` whose cluster cannot be reached makes
  them durable in its spool only, and says so in :meth:`Store.health`.)
* ``search`` applies every filter *inside* the query. When ``query.groups`` is not
  None, only documents whose ``access_groups`` meet those groups exist for the caller:
  they are left out of ``items``, ``total`` and ``facets`` alike. ``groups=None`` is
  the operator's unfiltered view and must only be used by local, trusted callers.
* Free text: each whitespace-separated term must occur, case-insensitively, as a
  substring of the document's :meth:`~catalogd.document.FileDocument.search_text`
  (file name, path, proposal, titles, samples): partial words match.
* Results are ordered by ``query.sort`` then by id; ``next_cursor`` continues after the
  last item and is None on the last page.
* Embargo: with ``public_before`` (an ISO date) and ``groups`` not None, a document is
  also visible when its ``visit_date`` is set and earlier than that date; a document
  without a visit date is never made public this way. ``get`` takes the same pair.
* Datasets: a master file (``metadata.role == "master"``) names the files it links to in
  ``metadata.data_files``. Every store presents a stored file that a stored master
  names, with the same access groups and visit date, as that master's part:
  ``metadata.role == "data"`` and ``metadata.master`` = the master's path (the first
  such master by path), whatever the file's own extraction said, and in whatever order
  the two were written; deleting the master, or a master no longer naming the file,
  undoes it. ``collapse`` leaves such parts out of items, total and facets, so a search
  returns measurements; the master's ``metadata.data_files`` and
  ``metadata.data_file_count`` tell how many files it has.
* ``fingerprints`` gives, for every document (optionally under a path prefix), what
  tells whether its file changed since it was stored: id, path, size, mtime, ctime and
  inode exactly as they were stored (the daemon compares them with ``lstat`` to catch
  up after a restart without re-reading unchanged files).
* Errors are raised as :class:`~catalogd.errors.StoreError` (or its subclass
  ``StoreUnavailable``); a backend's own exceptions never escape it.
"""

from __future__ import annotations

import abc
import datetime as dt
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from catalogd.document import FileDocument
from catalogd.violations import Violation, ViolationState

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Fields that can be sorted on; a leading ``-`` sorts descending.
SORT_FIELDS = ("path", "mtime", "size", "start_time", "indexed_at")
FACET_FIELDS = ("user_type", "beamline", "proposal", "visit", "kind")
DEFAULT_FACETS = ("user_type", "beamline", "proposal", "kind")


def iso_date(value: str | None) -> str | None:
    """``value`` as ``YYYY-MM-DD`` (None stays None); ValueError if it is no ISO date."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except (TypeError, ValueError):
        raise ValueError(f"not an ISO date (YYYY-MM-DD): {value!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchQuery:
    """What to look for, for whom, and which page."""

    text: str | None = None
    user_type: str | None = None
    beamline: str | None = None
    proposal: str | None = None
    visit: str | None = None
    kind: str | None = None
    #: Only files at or below this absolute directory (or this exact file).
    path_prefix: str | None = None
    #: Inclusive bounds on the measurement start (ISO 8601 strings, compared as text).
    start_from: str | None = None
    start_to: str | None = None
    #: The caller's effective groups; None is the unfiltered operator view.
    groups: frozenset[str] | None = None
    sort: str = "path"
    size: int = DEFAULT_PAGE_SIZE
    cursor: str | None = None
    facets: tuple[str, ...] = DEFAULT_FACETS
    #: Leave out the data files of stored masters (one item per measurement).
    collapse: bool = False
    #: Embargo: with ``groups``, documents whose visit date is before this ISO date are
    #: visible to every caller too. Normalised to ``YYYY-MM-DD``.
    public_before: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_before", iso_date(self.public_before))
        if self.sort.lstrip("-") not in SORT_FIELDS:
            raise ValueError(f"cannot sort on {self.sort!r}; choose one of {SORT_FIELDS}")
        if not 0 <= self.size <= MAX_PAGE_SIZE:
            raise ValueError(f"page size must be between 0 and {MAX_PAGE_SIZE}")
        unknown = set(self.facets) - set(FACET_FIELDS)
        if unknown:
            raise ValueError(f"unknown facets {sorted(unknown)}; choose from {FACET_FIELDS}")

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(self.text.split()) if self.text else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    total: int
    items: list[FileDocument]
    next_cursor: str | None = None
    #: facet name -> value -> count, over every visible match (not just this page).
    facets: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What says whether a file changed since its document was stored."""

    id: str
    path: str
    size: int
    mtime: float
    ctime: float
    inode: int

    @classmethod
    def of_document(cls, doc: FileDocument) -> Fingerprint:
        return cls(doc.id, doc.path, doc.size, doc.mtime, doc.ctime, doc.inode)

    @classmethod
    def of_stat(cls, doc_id: str, path: str, st: os.stat_result) -> Fingerprint:
        return cls(doc_id, path, st.st_size, st.st_mtime, st.st_ctime, st.st_ino)

    def same_content(self, other: Fingerprint) -> bool:
        """Same size, mtime and inode: the content is taken to be unchanged (a change
        of ctime alone is an owner, group or mode change)."""
        return (self.size, self.mtime, self.inode) == (other.size, other.mtime, other.inode)


class Store(abc.ABC):
    """A catalogue of file documents. See the module docstring for the contract."""

    #: The URL the store was opened from, with any credentials removed.
    url: str

    @abc.abstractmethod
    def put(self, docs: Iterable[FileDocument]) -> None:
        """Insert or replace documents by id."""

    @abc.abstractmethod
    def delete(self, ids: Iterable[str]) -> None:
        """Remove documents by id; unknown ids are ignored."""

    @abc.abstractmethod
    def get(
        self,
        doc_id: str,
        *,
        groups: frozenset[str] | None = None,
        public_before: str | None = None,
    ) -> FileDocument | None:
        """The document with this id, or None if absent or not visible to ``groups``
        (with the embargo ``public_before``, as in SearchQuery)."""

    @abc.abstractmethod
    def search(self, query: SearchQuery) -> SearchResult:
        """Documents matching ``query``, filtered by ``query.groups``."""

    @abc.abstractmethod
    def iter_documents(self, *, path_prefix: str | None = None) -> Iterator[FileDocument]:
        """Every document (unfiltered), optionally under ``path_prefix``, in path order."""

    def fingerprints(self, *, path_prefix: str | None = None) -> Iterator[Fingerprint]:
        """The fingerprint of every document, optionally under ``path_prefix``, in
        path order. Backends override this with a cheaper query; this default reads
        whole documents."""
        for doc in self.iter_documents(path_prefix=path_prefix):
            yield Fingerprint.of_document(doc)

    @abc.abstractmethod
    def count(self) -> int:
        """The number of documents stored."""

    # -- policy violations (see catalogd.violations for the history rules) ---------------
    @abc.abstractmethod
    def record_audit(
        self,
        findings: Iterable[Violation],
        *,
        scope: str,
        seen_at: float,
        recursive: bool = True,
    ) -> None:
        """Record the findings of an audit of ``scope`` made at ``seen_at``.

        Open records in the scope (the path itself, and everything below it when
        ``recursive``) that are not among ``findings`` are resolved at ``seen_at``.
        """

    @abc.abstractmethod
    def violations(
        self,
        *,
        state: ViolationState = ViolationState.OPEN,
        path_prefix: str | None = None,
    ) -> list[Violation]:
        """Stored violations in ``state``, ordered by path, rule and first_seen."""

    def health(self) -> dict[str, Any]:
        """``{"state": "ok"}``, or ``{"state": "degraded", ...}`` with the reason: a
        store whose writes are spooled while its cluster is unreachable reports
        ``spooled``, ``oldest_age_s`` and ``error`` (:mod:`catalogd.store.spool`)."""
        return {"state": "ok"}

    def flush(self) -> None:  # noqa: B027 - synchronous stores have nothing to flush
        """Block until every earlier write is durable and visible."""

    def close(self) -> None:  # noqa: B027 - stores without resources need no closing
        """Flush and release resources. The store cannot be used afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
