"""The Elasticsearch catalogue store: the contract of :mod:`catalogd.store.base` on a
cluster, through the official ``elasticsearch`` client (9.x, for Elasticsearch 9.x).

Layout (:mod:`catalogd.store.es_schema`): an index template per kind of index and a
versioned index (``<prefix>-files-v1``) behind an alias (``<prefix>-files``) that every
read and write goes through, so a new version can be filled and swapped in atomically.
Violations and their history live in a second index, ``<prefix>-violations``.

Writes: ``put`` and ``delete`` send bulk requests of at most BULK_BATCH_DOCS documents
(BULK_BATCH_BYTES), with the document id as ``_id``, so every write is an idempotent
upsert. Several writes of one id in one call are collapsed to the last, and calls are
serialised, so writes are applied in order. A whole request failing for want of a
connection, or with 429 or 5xx, and each item refused with 429 or 5xx, are retried with
exponential backoff (BULK_RETRIES times); an item refused for any other reason raises
StoreError naming the file. Nothing is dropped silently.

Refresh policy: writes do not wait for a refresh. The index refreshes every
REFRESH_INTERVAL (1 s), so a document is searchable about a second after ``put``
returns; ``flush()`` refreshes at once (what tests and ``catalogd scan`` use). Audit
results that change the violations index refresh it at once: the next audit of the same
scope reads them, and most audits change nothing.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from elasticsearch import Elasticsearch

from catalogd.document import FileDocument
from catalogd.errors import StoreError, StoreUnavailable, UsageError
from catalogd.store import es_query as q
from catalogd.store import es_schema as schema
from catalogd.store.base import SearchQuery, SearchResult, Store
from catalogd.store.es_errors import CLIENT_ERRORS, RETRY_STATUSES, retryable, translate
from catalogd.store.query import decode_cursor, encode_cursor, sort_value
from catalogd.violations import Violation, ViolationState

REQUEST_TIMEOUT_S = 30.0
#: Documents per bulk request, and the most bytes of sources in one.
BULK_BATCH_DOCS = 1000
BULK_BATCH_BYTES = 8 * 1024 * 1024
BULK_RETRIES = 5
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 8.0
#: Documents (or violations) read per request by iter_documents and violations.
ITER_PAGE = 1000
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,100}$")

Action = tuple[str, str, dict[str, Any] | None]  # (op, id, source)


def parse_url(url: str) -> tuple[list[str], str, str]:
    """The hosts, index prefix and credential-free text of an Elasticsearch store URL.

    ``http(s)://HOST:PORT[,http(s)://HOST2:PORT...]``, optionally ending in
    ``?index=PREFIX`` (default ``catalogd``) to name the indices ``PREFIX-files`` and
    ``PREFIX-violations``.
    """
    hosts: list[str] = []
    shown: list[str] = []
    prefix = schema.DEFAULT_PREFIX
    for part in url.split(","):
        parts = urlsplit(part.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"invalid Elasticsearch store URL {url!r}: expected http(s)://HOST:PORT"
            )
        if parts.query:
            wanted = parse_qs(parts.query).get("index", [""])[-1]
            if not _PREFIX_RE.match(wanted):
                raise UsageError(
                    f"invalid index prefix in {url!r}: use ?index=NAME with lower-case "
                    "letters, digits, '_', '-' and '.'"
                )
            prefix = wanted
        hosts.append(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        shown.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    return hosts, prefix, ",".join(shown)


class ElasticsearchStore(Store):
    """The catalogue in the indices named by ``prefix`` on the cluster at ``hosts``."""

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        prefix: str = schema.DEFAULT_PREFIX,
        shown_url: str | None = None,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        bulk_retries: int = BULK_RETRIES,
        backoff_s: float = BACKOFF_INITIAL_S,
    ) -> None:
        self.url = shown_url or ",".join(hosts)
        self._where = self.url
        self.prefix = prefix
        self._files = schema.files_alias(prefix)
        self._violations = schema.violations_alias(prefix)
        self._violations_ready = False
        self._retries = bulk_retries
        self._backoff_s = backoff_s
        self._closed = False
        self._write_lock = threading.RLock()
        self._client = Elasticsearch(
            list(hosts),
            request_timeout=request_timeout_s,
            max_retries=0,  # retried here, with backoff
            retry_on_timeout=False,
        )
        try:
            self._call(lambda c: c.cluster.health())
            self._ensure_index(self._files, schema.FILES_MAPPING)
        except BaseException:
            self._client.close()
            raise

    @classmethod
    def from_url(cls, url: str) -> ElasticsearchStore:
        hosts, prefix, shown = parse_url(url)
        return cls(hosts, prefix=prefix, shown_url=shown)

    def __enter__(self) -> ElasticsearchStore:
        return self

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, request: Any) -> Any:
        """``request(client)``, with the client's exceptions translated."""
        if self._closed:
            raise StoreError(f"the Elasticsearch store {self._where} is closed")
        try:
            return request(self._client)
        except CLIENT_ERRORS as exc:
            raise translate(exc, self._where) from exc

    def _ensure_index(self, alias: str, mapping: dict[str, Any]) -> None:
        """The template, and the first version of the index behind ``alias``, if absent."""
        if self._call(lambda c: c.indices.exists_alias(name=alias)):
            return
        self._call(
            lambda c: c.indices.put_index_template(name=alias, **schema.template(alias, mapping))
        )
        index = schema.versioned(alias)
        try:
            self._client.indices.create(index=index, aliases={alias: {"is_write_index": True}})
        except CLIENT_ERRORS as exc:
            if "resource_already_exists_exception" not in str(exc):
                raise translate(exc, self._where) from exc
            if not self._call(lambda c: c.indices.exists_alias(name=alias)):
                self._call(lambda c: c.indices.put_alias(index=index, name=alias))

    def _ensure_violations(self) -> None:
        if not self._violations_ready:
            self._ensure_index(self._violations, schema.VIOLATIONS_MAPPING)
            self._violations_ready = True

    def _bulk(self, index: str, actions: Sequence[Action], *, refresh: bool = False) -> None:
        """Apply ``actions`` in batches; retry what may succeed later, raise the rest."""
        latest: dict[str, Action] = {}
        for action in actions:  # the last write of an id wins, as if applied in order
            latest.pop(action[1], None)
            latest[action[1]] = action
        pending = list(latest.values())
        with self._write_lock:
            while pending:
                batch: list[Action] = []
                size = 0
                for action in pending:
                    cost = len(str(action[2])) if action[2] is not None else 0
                    if batch and (len(batch) >= BULK_BATCH_DOCS or size + cost > BULK_BATCH_BYTES):
                        break
                    batch.append(action)
                    size += cost
                self._bulk_batch(index, batch, refresh=refresh)
                pending = pending[len(batch) :]

    def _bulk_batch(self, index: str, batch: list[Action], *, refresh: bool) -> None:
        delay = self._backoff_s
        pending = batch
        failure = ""
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            operations: list[dict[str, Any]] = []
            for op, doc_id, source in pending:
                operations.append({op: {"_id": doc_id}})
                if source is not None:
                    operations.append(source)
            if self._closed:
                raise StoreError(f"the Elasticsearch store {self._where} is closed")
            try:
                response = self._client.bulk(
                    operations=operations, index=index, refresh=refresh
                ).body
            except CLIENT_ERRORS as exc:
                if retryable(exc):
                    failure = str(translate(exc, self._where))
                    continue
                raise translate(exc, self._where) from exc
            if not response.get("errors"):
                return
            retry: list[Action] = []
            for action, item in zip(pending, response["items"], strict=True):
                result = next(iter(item.values()))
                status = int(result.get("status", 0))
                if status < 300 or (action[0] == "delete" and status == 404):
                    continue
                if status in RETRY_STATUSES:
                    retry.append(action)
                    failure = f"status {status}: {result.get('error')}"
                    continue
                what = action[2].get("path") if action[2] else action[1]
                raise StoreError(
                    f"Elasticsearch at {self._where} refused to {action[0]} {what!r}: "
                    f"{result.get('error')}"
                )
            if not retry:
                return
            pending = retry
        raise StoreUnavailable(
            f"Elasticsearch at {self._where} did not take {len(pending)} writes after "
            f"{self._retries + 1} attempts: {failure}"
        )

    def _hits(self, index: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every hit of ``body`` (which sorts on unique keys), ITER_PAGE per request."""
        after: list[Any] | None = None
        while True:
            page = dict(body, size=ITER_PAGE)
            if after is not None:
                page["search_after"] = after
            hits = self._call(lambda c, page=page: c.search(index=index, **page))["hits"]["hits"]
            yield from hits
            if len(hits) < ITER_PAGE:
                return
            after = hits[-1]["sort"]

    # -- writes -----------------------------------------------------------------------------
    def put(self, docs: Iterable[FileDocument]) -> None:
        actions: list[Action] = [("index", doc.id, schema.doc_source(doc)) for doc in docs]
        if actions:
            self._bulk(self._files, actions)

    def delete(self, ids: Iterable[str]) -> None:
        actions: list[Action] = [("delete", doc_id, None) for doc_id in ids]
        if actions:
            self._bulk(self._files, actions)

    def record_audit(
        self,
        findings: Iterable[Violation],
        *,
        scope: str,
        seen_at: float,
        recursive: bool = True,
    ) -> None:
        found = {v.key: v for v in findings}
        for finding in found.values():
            schema.violation_source(finding, "")  # refuse what cannot be stored, first
        with self._write_lock:
            self._ensure_violations()
            in_scope = [{"term": {"open": True}}, q.scope_filter(scope, recursive)]
            body = {
                "query": q.bool_query(in_scope),
                "sort": [{"key": "asc"}],
                "_source": ["record", "key"],
            }
            records = [
                (str(hit["_source"]["key"]), schema.source_violation(hit["_source"]))
                for hit in self._hits(self._violations, body)
            ]
            updated: list[tuple[str, Violation]] = []
            for key, old in records:
                fresh = found.pop(old.key, None)
                if fresh is not None:
                    renewed = replace(fresh, first_seen=old.first_seen, last_seen=seen_at)
                    updated.append((key, renewed))
                else:
                    updated.append((key, replace(old, resolved_at=seen_at)))
            for fresh in found.values():
                new = replace(fresh, first_seen=seen_at, last_seen=seen_at, resolved_at=None)
                updated.append((uuid.uuid4().hex, new))
            actions: list[Action] = [
                ("index", key, schema.violation_source(v, key)) for key, v in updated
            ]
            if actions:
                self._bulk(self._violations, actions, refresh=True)

    def flush(self) -> None:
        indices = [self._files] + ([self._violations] if self._violations_ready else [])
        with self._write_lock:
            self._call(lambda c: c.indices.refresh(index=",".join(indices)))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._client.close()

    # -- reads ------------------------------------------------------------------------------
    def get(self, doc_id: str, *, groups: frozenset[str] | None = None) -> FileDocument | None:
        clauses = [{"term": {"id": schema.keyword(doc_id)}}, *q.access_filter(groups)]
        body = {"query": q.bool_query(clauses), "size": 1, "_source": ["doc"]}
        hits = self._call(lambda c: c.search(index=self._files, **body))["hits"]["hits"]
        return schema.source_doc(hits[0]["_source"]) if hits else None

    def search(self, query: SearchQuery) -> SearchResult:
        field_name = query.sort.lstrip("-")
        after = None if query.cursor is None else decode_cursor(query.cursor, query.sort)
        if after is not None and isinstance(after[0], str) != (field_name in q.TEXT_SORTS):
            raise UsageError("invalid cursor: it belongs to another sort order")
        body: dict[str, Any] = {
            "query": q.bool_query(q.filters(query)),
            "track_total_hits": True,
            "size": query.size + 1 if query.size else 0,
            "_source": ["doc"],
        }
        if query.facets:
            body["aggs"] = q.facet_aggs(query.facets)
        if query.size:
            body["sort"] = q.sort_clause(query.sort)
            if after is not None:
                body["search_after"] = q.search_after(*after)
        response = self._call(lambda c: c.search(index=self._files, **body))
        hits = response["hits"]["hits"]
        items = [schema.source_doc(hit["_source"]) for hit in hits[: query.size]]
        next_cursor = None
        if len(hits) > query.size and items:
            last = items[-1]
            next_cursor = encode_cursor(sort_value(last, field_name), last.id)
        facets: dict[str, dict[str, int]] = {}
        for name in dict.fromkeys(query.facets):
            buckets = response["aggregations"][name]["buckets"]
            counts = {schema.from_keyword(str(b["key"])): int(b["doc_count"]) for b in buckets}
            facets[name] = dict(sorted(counts.items()))
        total = int(response["hits"]["total"]["value"])
        return SearchResult(total=total, items=items, next_cursor=next_cursor, facets=facets)

    def iter_documents(self, *, path_prefix: str | None = None) -> Iterator[FileDocument]:
        clauses = [] if path_prefix is None else [q.prefix_filter(path_prefix)]
        body = {"query": q.bool_query(clauses), "sort": q.sort_clause("path"), "_source": ["doc"]}
        for hit in self._hits(self._files, body):
            yield schema.source_doc(hit["_source"])

    def count(self) -> int:
        return int(self._call(lambda c: c.count(index=self._files))["count"])

    def violations(
        self,
        *,
        state: ViolationState = ViolationState.OPEN,
        path_prefix: str | None = None,
    ) -> list[Violation]:
        self._ensure_violations()
        clauses: list[dict[str, Any]] = []
        if state is not ViolationState.ALL:
            clauses.append({"term": {"open": state is ViolationState.OPEN}})
        if path_prefix is not None:
            clauses.append(q.prefix_filter(path_prefix))
        body = {"query": q.bool_query(clauses), "sort": [{"key": "asc"}], "_source": ["record"]}
        records = [
            schema.source_violation(h["_source"]) for h in self._hits(self._violations, body)
        ]
        return sorted(records, key=lambda v: (v.path, v.rule, v.first_seen or 0.0))
