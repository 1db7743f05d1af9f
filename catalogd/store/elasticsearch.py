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

Reads: ``get`` is a real-time get by id (it sees writes not yet refreshed) with the
caller's access checked on the stored ``access_groups`` of that one document;
``iter_documents`` reads one point-in-time snapshot, so concurrent writes neither repeat
nor skip documents.

Mapping versions: the files index records the mapping version it was built with in its
mapping's ``_meta`` (an index without one is version 1). Opening a catalogue whose index
is older than :data:`~catalogd.store.es_schema.SCHEMA_VERSION` raises
:class:`~catalogd.store.es_errors.SchemaOutdated` ("run catalogd reindex") instead of
failing on the first write; :mod:`catalogd.store.es_reindex` builds the next version.
A write refused by an index write block (``catalogd reindex`` sets one for the moment
it takes to catch up and swap the alias) is retried like a busy cluster.

An unreachable cluster raises StoreUnavailable with catalogd's own message; the
client's per-node warnings are silenced (:mod:`catalogd.store.spool` keeps writes
during an outage).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from elasticsearch import Elasticsearch, NotFoundError, UnsupportedProductError

from catalogd.document import FileDocument
from catalogd.errors import StoreError, StoreUnavailable, UsageError
from catalogd.optional import require
from catalogd.store import es_links
from catalogd.store import es_query as q
from catalogd.store import es_schema as schema
from catalogd.store.base import SearchQuery, SearchResult, Store, iso_date
from catalogd.store.engine import (
    DEFAULT_ENGINE,
    ENGINE_NAMES,
    Engine,
    mismatch,
    url_engine,
    url_parameters,
)
from catalogd.store.es_errors import (
    CLIENT_ERRORS,
    SchemaOutdated,
    retryable,
    retryable_item,
    translate,
)
from catalogd.store.query import decode_cursor, encode_cursor, sort_value, visible
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
#: How long a point-in-time of iter_documents stays open between two pages.
PIT_KEEP_ALIVE = "2m"
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,100}$")

Action = tuple[str, str, dict[str, Any] | None]  # (op, id, source)

# The transport logs a warning per failed node and request; StoreUnavailable already
# says what happened, once, in catalogd's words.
logging.getLogger("elastic_transport").setLevel(logging.ERROR)


def parse_url(url: str) -> tuple[list[str], str, str]:
    """The hosts, index prefix and credential-free text of an Elasticsearch store URL.

    ``http(s)://HOST:PORT[,http(s)://HOST2:PORT...]``, optionally ending in
    ``?index=PREFIX`` (default ``catalogd``) to name the indices ``PREFIX-files`` and
    ``PREFIX-violations``, and ``engine=`` (:func:`store_engine`).
    """
    hosts: list[str] = []
    shown: list[str] = []
    try:
        wanted = url_parameters(url).get("index")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if wanted is not None and not _PREFIX_RE.match(wanted):
        raise UsageError(
            f"invalid index prefix in {url!r}: use ?index=NAME with lower-case "
            "letters, digits, '_', '-' and '.'"
        )
    prefix = schema.DEFAULT_PREFIX if wanted is None else wanted
    for part in url.split(","):
        parts = urlsplit(part.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"invalid Elasticsearch store URL {url!r}: expected http(s)://HOST:PORT"
            )
        hosts.append(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        shown.append(urlunsplit((parts.scheme, netloc, parts.path, "", "")))
    return hosts, prefix, ",".join(shown)


def store_engine(url: str) -> Engine:
    """The engine an ``http(s)://`` store URL names with ``engine=elasticsearch`` or
    ``engine=opensearch`` (:mod:`catalogd.store.engine`); Elasticsearch without one."""
    try:
        return url_engine(url) or DEFAULT_ENGINE
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def connect(engine: Engine, hosts: Sequence[str], **options: Any) -> Elasticsearch:
    """The client of ``engine``: the ``elasticsearch`` client, or for OpenSearch the
    ``opensearch-py`` client behind the same call surface (:mod:`.os_client`)."""
    if engine == "opensearch":
        require("opensearchpy", "opensearch")
        from catalogd.store import os_client

        return os_client.connect(hosts, **options)
    return Elasticsearch(list(hosts), **options)


def check_product(engine: Engine, client: Elasticsearch, where: str) -> None:
    """The first request: the cluster answers, and is the engine the store is for
    (EngineMismatch when it is the other one)."""
    if engine == "opensearch":
        from catalogd.store import os_client

        client.cluster.health()
        os_client.check_product(client, where)
        return
    try:
        client.cluster.health()
    except UnsupportedProductError as exc:  # the client checks every answer's product
        server = exc.meta.headers.get("X-OpenSearch-Version") or ""  # OpenSearch/3.3.0 (.)
        found = server.split(" ")[0].replace("/", " ") or "a server that is not Elasticsearch"
        raise mismatch(where, found, engine) from None


class ElasticsearchStore(Store):
    """The catalogue in the indices named by ``prefix`` on the cluster at ``hosts``."""

    def __init__(
        self,
        hosts: Sequence[str],
        *,
        prefix: str = schema.DEFAULT_PREFIX,
        shown_url: str | None = None,
        engine: Engine = DEFAULT_ENGINE,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        bulk_retries: int = BULK_RETRIES,
        backoff_s: float = BACKOFF_INITIAL_S,
        check_version: bool = True,
        shards: int = schema.DEFAULT_SHARDS,
        replicas: int | None = None,
    ) -> None:
        self.url = shown_url or ",".join(hosts)
        # [store] shards and replicas: the files index when it is created (and by
        # catalogd reindex); the small violations index keeps one shard.
        self.files_settings = schema.index_settings(shards, replicas)
        self._violations_settings = schema.index_settings(schema.DEFAULT_SHARDS, replicas)
        self._where = self.url
        self.prefix = prefix
        self._files = schema.files_alias(prefix)
        self._violations = schema.violations_alias(prefix)
        self._violations_ready = False
        self._retries = bulk_retries
        self._backoff_s = backoff_s
        self._closed = False
        self._write_lock = threading.RLock()
        #: "elasticsearch" or "opensearch": which client, and what the server must be.
        self.engine = engine
        self._product = ENGINE_NAMES[engine]
        self._client = connect(
            engine,
            hosts,
            request_timeout=request_timeout_s,
            # A node that cannot be reached is tried no more: the client sends the same
            # request to the next node (each once), so a cluster answers while one of its
            # nodes is down. Refusals (429, 503) and timeouts are retried here, with backoff.
            max_retries=len(hosts) - 1,
            retry_on_status=(),
            retry_on_timeout=False,
        )
        try:
            self._call(lambda c: check_product(engine, c, self.url))
            self._ensure_index(self._files, schema.FILES_MAPPING, self.files_settings)
            if check_version:
                self._check_version()
        except BaseException:
            self._client.close()
            raise

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ElasticsearchStore:
        """The store a URL names; ``options`` are the constructor's keywords."""
        hosts, prefix, shown = parse_url(url)
        return cls(hosts, prefix=prefix, shown_url=shown, engine=store_engine(url), **options)

    @property
    def client(self) -> Elasticsearch:
        """The client (for ``catalogd reindex`` and the benchmark)."""
        return self._client

    @property
    def files_alias(self) -> str:
        return self._files

    def write_into(self, index: str, docs: Sequence[FileDocument]) -> None:
        """Index ``docs`` as they are into ``index`` (not the alias), with the retries of
        every write: for ``catalogd reindex``, which copies documents whose datasets are
        already resolved, so no look-ups are made."""
        self._bulk(index, [("index", d.id, schema.doc_source(d)) for d in docs])

    def delete_from(self, index: str, ids: Sequence[str]) -> None:
        """Delete ``ids`` from ``index`` (not the alias): for ``catalogd reindex``."""
        self._bulk(index, [("delete", doc_id, None) for doc_id in ids])

    def __enter__(self) -> ElasticsearchStore:
        return self

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, request: Any) -> Any:
        """``request(client)``, with the client's exceptions translated."""
        if self._closed:
            raise StoreError(f"the {self._product} store {self._where} is closed")
        try:
            return request(self._client)
        except CLIENT_ERRORS as exc:
            raise translate(exc, self._where, self._product) from exc

    def _ensure_index(self, alias: str, mapping: dict[str, Any], settings: dict[str, Any]) -> None:
        """The template, and the first version of the index behind ``alias``, if absent."""
        if self._call(lambda c: c.indices.exists_alias(name=alias)):
            return
        template = schema.template(alias, mapping, settings)
        self._call(lambda c: c.indices.put_index_template(name=alias, **template))
        index = schema.versioned(alias)
        try:
            self._client.indices.create(
                index=index,
                aliases={alias: {"is_write_index": True}},
                mappings={"_meta": {"schema_version": schema.SCHEMA_VERSION}},
            )
        except CLIENT_ERRORS as exc:
            if "resource_already_exists_exception" not in str(exc):
                raise translate(exc, self._where, self._product) from exc
            if not self._call(lambda c: c.indices.exists_alias(name=alias)):
                self._call(lambda c: c.indices.put_alias(index=index, name=alias))

    def index_version(self) -> tuple[str, int]:
        """The index behind the files alias and the mapping version it was built with."""
        found = self._call(lambda c: c.indices.get_mapping(index=self._files)).body
        if len(found) != 1:
            raise StoreError(
                f"the alias {self._files} at {self._where} points at {len(found)} indices "
                f"({', '.join(sorted(found))}); it must point at one"
            )
        index, body = next(iter(found.items()))
        meta = body.get("mappings", {}).get("_meta") or {}
        return index, int(meta.get("schema_version", 1))

    def _check_version(self) -> None:
        index, version = self.index_version()
        added = schema.added_since(version) if version < schema.SCHEMA_VERSION else None
        if added is not None:  # new fields only: the index takes them in place
            meta = {"schema_version": schema.SCHEMA_VERSION}
            self._call(lambda c: c.indices.put_mapping(index=index, properties=added, meta=meta))
            template = schema.template(self._files, schema.FILES_MAPPING, self.files_settings)
            self._call(lambda c: c.indices.put_index_template(name=self._files, **template))
            return
        if version < schema.SCHEMA_VERSION:
            raise SchemaOutdated(
                f"the catalogue index {index} at {self._where} was built with mapping "
                f"version {version} and this catalogd uses version {schema.SCHEMA_VERSION}: "
                f"run `catalogd reindex --store {self._where}?index={self.prefix}` "
                "(searches keep answering while it runs)"
            )
        if version > schema.SCHEMA_VERSION:
            raise SchemaOutdated(
                f"the catalogue index {index} at {self._where} was built by a newer catalogd "
                f"(mapping version {version}, this one knows {schema.SCHEMA_VERSION}): "
                "upgrade catalogd on this node"
            )

    def _ensure_violations(self) -> None:
        if not self._violations_ready:
            self._ensure_index(
                self._violations, schema.VIOLATIONS_MAPPING, self._violations_settings
            )
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
                raise StoreError(f"the {self._product} store {self._where} is closed")
            try:
                response = self._client.bulk(
                    operations=operations, index=index, refresh=refresh
                ).body
            except CLIENT_ERRORS as exc:
                if retryable(exc):
                    failure = str(translate(exc, self._where, self._product))
                    continue
                raise translate(exc, self._where, self._product) from exc
            if not response.get("errors"):
                return
            retry: list[Action] = []
            for action, item in zip(pending, response["items"], strict=True):
                result = next(iter(item.values()))
                status = int(result.get("status", 0))
                if status < 300 or (action[0] == "delete" and status == 404):
                    continue
                if retryable_item(status, result.get("error")):
                    retry.append(action)
                    failure = f"status {status}: {result.get('error')}"
                    continue
                what = action[2].get("path") if action[2] else action[1]
                raise StoreError(
                    f"{self._product} at {self._where} refused to {action[0]} {what!r}: "
                    f"{result.get('error')}"
                )
            if not retry:
                return
            pending = retry
        raise StoreUnavailable(
            f"{self._product} at {self._where} did not take {len(pending)} writes after "
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
        docs = list(docs)
        # Encoded first, so what cannot be stored is refused before any look-up; a
        # document es_links leaves as it is (the same object) keeps this encoding.
        encoded = {id(doc): schema.doc_source(doc) for doc in docs}
        with self._write_lock:  # datasets: look-ups and writes in one step (es_links)
            written, refresh = es_links.prepare_put(self._call, self._files, docs)
            actions: list[Action] = [
                ("index", d.id, encoded.get(id(d)) or schema.doc_source(d)) for d in written
            ]
            if actions:
                self._bulk(self._files, actions, refresh=refresh)

    def delete(self, ids: Iterable[str]) -> None:
        actions: list[Action] = [("delete", doc_id, None) for doc_id in ids]
        if not actions:
            return
        with self._write_lock:
            masters = es_links.masters_among(self._call, self._files, (a[1] for a in actions))
            self._bulk(self._files, actions, refresh=bool(masters))
            parts = es_links.after_delete(self._call, self._files, masters)
            if parts:
                updates = [("index", d.id, schema.doc_source(d)) for d in parts]
                self._bulk(self._files, updates, refresh=True)

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
    def get(
        self,
        doc_id: str,
        *,
        groups: frozenset[str] | None = None,
        public_before: str | None = None,
    ) -> FileDocument | None:
        if schema.keyword(doc_id) != doc_id or not doc_id or len(doc_id.encode()) > 512:
            return None  # no stored _id is like this (not UTF-8, empty, or too long)

        def fetch(c: Elasticsearch) -> dict[str, Any] | None:
            try:
                return dict(c.get(index=self._files, id=doc_id, source_includes=["doc"]).body)
            except NotFoundError:
                return None

        found = self._call(fetch)
        if not found or not found.get("found"):
            return None
        doc = schema.source_doc(found["_source"])
        # One document by id: its access is checked here, on the stored groups, before
        # anything leaves the store; not visible is the same answer as absent.
        return doc if visible(doc, groups, iso_date(public_before)) else None

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
            few = q.few_documents(query.groups, query.public_before)
            body["aggs"] = q.facet_aggs(query.facets, few=few)
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
        for hit in self.snapshot_hits(body):
            yield schema.source_doc(hit["_source"])

    def snapshot_hits(
        self, body: dict[str, Any], *, index: str | None = None, page: int = ITER_PAGE
    ) -> Iterator[dict[str, Any]]:
        """Every hit of ``body`` (sorted on unique keys) in one point-in-time snapshot of
        ``index`` (default: the files alias), ``page`` per request; the snapshot is
        released when the iteration ends or is abandoned."""
        target = index or self._files
        pit = self._call(lambda c: c.open_point_in_time(index=target, keep_alive=PIT_KEEP_ALIVE))
        pit_id = str(pit["id"])
        after: list[Any] | None = None
        try:
            while True:
                request = dict(body, size=page, pit={"id": pit_id, "keep_alive": PIT_KEEP_ALIVE})
                if after is not None:
                    request["search_after"] = after
                response = self._call(lambda c, request=request: c.search(**request))
                pit_id = str(response.get("pit_id", pit_id))
                hits = response["hits"]["hits"]
                yield from hits
                if len(hits) < page:
                    return
                after = hits[-1]["sort"]
        finally:
            if not self._closed:
                try:
                    self._client.close_point_in_time(id=pit_id)
                except CLIENT_ERRORS:
                    pass  # it expires by itself after PIT_KEEP_ALIVE

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
