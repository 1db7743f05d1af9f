"""An in-memory store: the reference implementation of the contract, for tests.

Thread-safe, synchronous, and gone when the process ends (``memory://``). Documents are
kept as written; which master a file belongs to is worked out when it is read, from an
index of the paths the stored masters name (see :mod:`catalogd.store.links`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace

from catalogd.document import FileDocument
from catalogd.store import links
from catalogd.store.base import SearchQuery, SearchResult, Store, iso_date
from catalogd.store.query import (
    after_cursor,
    decode_cursor,
    encode_cursor,
    facet_counts,
    matches,
    sort_value,
    under_prefix,
    visible,
)
from catalogd.violations import Violation, ViolationState


class MemoryStore(Store):
    def __init__(self) -> None:
        self.url = "memory://"
        self._docs: dict[str, FileDocument] = {}
        self._lock = threading.Lock()
        self._violations: list[Violation] = []
        #: data file path -> ids of the stored masters naming it.
        self._named_by: dict[str, set[str]] = {}

    def _index(self, doc: FileDocument, *, add: bool) -> None:
        for path in links.data_files(doc):
            ids = self._named_by.setdefault(path, set())
            if add:
                ids.add(doc.id)
            else:
                ids.discard(doc.id)
                if not ids:
                    del self._named_by[path]

    def _resolved(self, doc: FileDocument) -> FileDocument:
        """``doc`` with its dataset membership (the lock is held)."""
        masters = (self._docs[i] for i in self._named_by.get(doc.path, ()))
        return links.resolve(doc, masters)

    def put(self, docs: Iterable[FileDocument]) -> None:
        with self._lock:
            for doc in docs:
                old = self._docs.get(doc.id)
                if old is not None:
                    self._index(old, add=False)
                self._docs[doc.id] = doc
                self._index(doc, add=True)

    def delete(self, ids: Iterable[str]) -> None:
        with self._lock:
            for doc_id in ids:
                old = self._docs.pop(doc_id, None)
                if old is not None:
                    self._index(old, add=False)

    def get(
        self,
        doc_id: str,
        *,
        groups: frozenset[str] | None = None,
        public_before: str | None = None,
    ) -> FileDocument | None:
        public_before = iso_date(public_before)
        with self._lock:
            doc = self._docs.get(doc_id)
            if doc is None or not visible(doc, groups, public_before):
                return None
            return self._resolved(doc)

    def search(self, query: SearchQuery) -> SearchResult:
        with self._lock:
            resolved = [self._resolved(doc) for doc in self._docs.values()]
        hits = [doc for doc in resolved if matches(doc, query)]
        field = query.sort.lstrip("-")
        hits.sort(key=lambda d: (sort_value(d, field), d.id), reverse=query.sort.startswith("-"))
        page = hits
        if query.cursor is not None:
            position = decode_cursor(query.cursor, query.sort)
            page = [doc for doc in hits if after_cursor(doc, query, position)]
        items = page[: query.size]
        next_cursor = None
        if len(page) > query.size and items:
            last = items[-1]
            next_cursor = encode_cursor(sort_value(last, field), last.id)
        return SearchResult(
            total=len(hits),
            items=items,
            next_cursor=next_cursor,
            facets=facet_counts(hits, query.facets),
        )

    def iter_documents(self, *, path_prefix: str | None = None) -> Iterator[FileDocument]:
        with self._lock:
            docs = [self._resolved(doc) for doc in self._docs.values()]
        docs.sort(key=lambda d: (sort_value(d, "path"), d.id))
        for doc in docs:
            if path_prefix is None or under_prefix(doc.path, path_prefix):
                yield doc

    def count(self) -> int:
        with self._lock:
            return len(self._docs)

    def record_audit(
        self,
        findings: Iterable[Violation],
        *,
        scope: str,
        seen_at: float,
        recursive: bool = True,
    ) -> None:
        found = {v.key: v for v in findings}
        with self._lock:
            kept: list[Violation] = []
            for record in self._violations:
                in_scope = record.path == scope or (recursive and under_prefix(record.path, scope))
                if not record.is_open or not in_scope:
                    kept.append(record)
                elif record.key in found:
                    fresh = found.pop(record.key)
                    kept.append(replace(fresh, first_seen=record.first_seen, last_seen=seen_at))
                else:
                    kept.append(replace(record, resolved_at=seen_at))
            for fresh in found.values():
                kept.append(replace(fresh, first_seen=seen_at, last_seen=seen_at, resolved_at=None))
            self._violations = kept

    def violations(
        self,
        *,
        state: ViolationState = ViolationState.OPEN,
        path_prefix: str | None = None,
    ) -> list[Violation]:
        with self._lock:
            records = list(self._violations)
        return sorted(
            (
                v
                for v in records
                if (state is ViolationState.ALL or v.is_open == (state is ViolationState.OPEN))
                and (path_prefix is None or under_prefix(v.path, path_prefix))
            ),
            key=lambda v: (v.path, v.rule, v.first_seen or 0.0),
        )
