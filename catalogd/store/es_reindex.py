"""Zero-downtime reindex of the Elasticsearch catalogue (``catalogd reindex``).

The files alias points at one versioned index (``PREFIX-files-vN``). A reindex builds
``PREFIX-files-vN+1`` with the code's current template and mapping and swaps the alias
to it; searches and writes go through the alias all along, so they never stop:

1. **Fill.** The next index is created (refresh off while it fills) and filled from a
   point-in-time snapshot of the current one, page by page (``search_after`` on
   ``_shard_doc``), each document read back as a
   :class:`~catalogd.document.FileDocument` and encoded again by
   :func:`~catalogd.store.es_schema.doc_source`, so a changed mapping or encoding is
   applied. (The ``_reindex`` API would not do that, and the minimal distribution has no
   ``reindex`` module anyway.) The snapshot is taken after noting the index's highest
   sequence number, so every write it misses has a higher one.
2. **Catch up.** Writes made meanwhile are copied by a search for ``_seq_no`` above the
   last mark, in rounds until a round finds few; documents deleted meanwhile are found by
   walking the ids of both indices in order and removed from the new one.
3. **Swap.** The current index gets a write block (writers get 403
   ``cluster_block_exception``, which the store retries with backoff, and a daemon
   spools), the last writes are caught up, and one ``_aliases`` request moves the alias,
   write index included, to the new index. The old index is then deleted (or, with
   ``keep_old``, unblocked and kept outside the alias). If anything fails before the
   swap, the block is lifted and the new index deleted: the catalogue is as it was.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from catalogd.errors import StoreError
from catalogd.store import es_schema as schema
from catalogd.store.elasticsearch import BULK_BATCH_DOCS, ElasticsearchStore

#: A catch-up round copying fewer documents than this is the last before the swap.
QUIET_ROUND = 500
#: Most catch-up rounds before the swap (a catalogue written faster than it can be
#: copied still gets swapped; the write block then holds writers for the last round).
MAX_ROUNDS = 10

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ReindexResult:
    source: str
    target: str
    alias: str
    copied: int
    caught_up: int
    deleted: int
    kept_old: bool
    elapsed_s: float

    def summary(self) -> str:
        old = f"{self.source} kept" if self.kept_old else f"{self.source} deleted"
        return (
            f"reindexed {self.copied:,} documents from {self.source} into {self.target} in "
            f"{self.elapsed_s:.1f} s ({self.caught_up:,} written and {self.deleted:,} deleted "
            f"meanwhile, caught up); {self.alias} now points at {self.target}; {old}"
        )


class Reindexer:
    """One reindex of ``store``'s files index; :meth:`run` does it."""

    def __init__(
        self, store: ElasticsearchStore, *, keep_old: bool = False, progress: Progress | None
    ) -> None:
        self.store = store
        self.client = store.client
        self.alias = store.files_alias
        self.keep_old = keep_old
        self.progress = progress or (lambda done, total: None)
        self.copied = 0
        self.caught_up = 0
        self.deleted = 0

    def _call(self, request: Callable[[Any], Any]) -> Any:
        return self.store._call(request)

    def run(self) -> ReindexResult:
        started = time.monotonic()
        source, _ = self.store.index_version()
        target = schema.versioned(self.alias, self._next_version())
        self._call(
            lambda c: c.indices.put_index_template(
                name=self.alias,
                **schema.template(self.alias, schema.FILES_MAPPING, self.store.files_settings),
            )
        )
        self._call(
            lambda c: c.indices.create(
                index=target,
                settings={"index": {"refresh_interval": "-1"}},
                mappings={"_meta": {"schema_version": schema.SCHEMA_VERSION}},
            )
        )
        blocked = False
        try:
            mark = self._max_seq_no(source)
            self._refresh(source)
            total = self._count(source)
            self.progress(0, total)
            self.copied = self._copy(source, target, None, total)
            for _ in range(MAX_ROUNDS):
                mark, copied = self._catch_up(source, target, mark)
                if copied < QUIET_ROUND:
                    break
            self.deleted += self._remove_deleted(source, target)
            self._block(source, True)
            blocked = True
            mark, _ = self._catch_up(source, target, mark)
            self._refresh(target)
            if self._count(source) != self._count(target):
                self.deleted += self._remove_deleted(source, target)
            self._call(
                lambda c: c.indices.put_settings(
                    index=target, settings={"index": {"refresh_interval": schema.REFRESH_INTERVAL}}
                )
            )
            self._refresh(target)
            self._call(
                lambda c: c.indices.update_aliases(
                    actions=[
                        {"remove": {"index": source, "alias": self.alias}},
                        {"add": {"index": target, "alias": self.alias, "is_write_index": True}},
                    ]
                )
            )
        except BaseException:
            if blocked:
                self._block(source, False)
            self._call(lambda c: c.indices.delete(index=target, ignore_unavailable=True))
            raise
        if self.keep_old:
            self._block(source, False)
        else:
            self._call(lambda c: c.indices.delete(index=source))
        return ReindexResult(
            source=source,
            target=target,
            alias=self.alias,
            copied=self.copied,
            caught_up=self.caught_up,
            deleted=self.deleted,
            kept_old=self.keep_old,
            elapsed_s=time.monotonic() - started,
        )

    # -- steps -------------------------------------------------------------------------
    def _next_version(self) -> int:
        found = self._call(
            lambda c: c.indices.get(index=f"{self.alias}-v*", expand_wildcards="all")
        ).body
        pattern = re.compile(re.escape(self.alias) + r"-v(\d+)$")
        versions = [int(m.group(1)) for name in found if (m := pattern.match(name))]
        return max(versions, default=0) + 1

    def _max_seq_no(self, index: str) -> int:
        """The highest sequence number of ``index``: every later write has a higher one."""
        stats = self._call(lambda c: c.indices.stats(index=index, level="shards")).body
        shards = stats["indices"][index]["shards"]
        return max(
            int(copy["seq_no"]["max_seq_no"])
            for copies in shards.values()
            for copy in copies
            if copy["routing"]["primary"]
        )

    def _refresh(self, index: str) -> None:
        self._call(lambda c: c.indices.refresh(index=index))

    def _count(self, index: str) -> int:
        return int(self._call(lambda c: c.count(index=index))["count"])

    def _block(self, index: str, on: bool) -> None:
        self._call(
            lambda c: c.indices.put_settings(index=index, settings={"index.blocks.write": on})
        )

    def _copy(self, source: str, target: str, after_seq_no: int | None, total: int) -> int:
        """Copy what ``source`` holds (with a sequence number above ``after_seq_no``)."""
        query: dict[str, Any] = {"match_all": {}}
        if after_seq_no is not None:
            query = {"range": {"_seq_no": {"gt": after_seq_no}}}
        body = {"query": query, "sort": [{"_shard_doc": "asc"}], "_source": ["doc"]}
        batch = []
        copied = 0
        for hit in self.store.snapshot_hits(body, index=source, page=BULK_BATCH_DOCS):
            batch.append(schema.source_doc(hit["_source"]))
            if len(batch) >= BULK_BATCH_DOCS:
                self.store.write_into(target, batch)
                copied += len(batch)
                batch = []
                if after_seq_no is None:
                    self.progress(copied, total)
        if batch:
            self.store.write_into(target, batch)
            copied += len(batch)
        if after_seq_no is None:
            self.progress(copied, total)
        return copied

    def _catch_up(self, source: str, target: str, mark: int) -> tuple[int, int]:
        """Copy every write to ``source`` after ``mark``; the new mark and the count."""
        new_mark = self._max_seq_no(source)
        if new_mark <= mark:
            return mark, 0
        self._refresh(source)
        copied = self._copy(source, target, mark, 0)
        self.caught_up += copied
        return new_mark, copied

    def _ids(self, index: str) -> Iterator[str]:
        body = {"query": {"match_all": {}}, "sort": [{"id_key": "asc"}], "_source": False}
        for hit in self.store.snapshot_hits(body, index=index, page=BULK_BATCH_DOCS * 5):
            yield str(hit["_id"])

    def _remove_deleted(self, source: str, target: str) -> int:
        """Delete from ``target`` the documents ``source`` no longer has."""
        self._refresh(source)
        self._refresh(target)
        gone: list[str] = []
        removed = 0
        old = self._ids(source)
        current = next(old, None)
        for doc_id in self._ids(target):
            key = schema.order_key(doc_id)
            while current is not None and schema.order_key(current) < key:
                current = next(old, None)
            if current == doc_id:
                continue
            gone.append(doc_id)
            if len(gone) >= BULK_BATCH_DOCS:
                self.store.delete_from(target, gone)
                removed += len(gone)
                gone = []
        if gone:
            self.store.delete_from(target, gone)
            removed += len(gone)
        if removed:
            self._refresh(target)
        return removed


def reindex(
    store: ElasticsearchStore, *, keep_old: bool = False, progress: Progress | None = None
) -> ReindexResult:
    """Build the next version of ``store``'s files index and swap the alias to it."""
    if not isinstance(store, ElasticsearchStore):  # pragma: no cover - typed callers
        raise StoreError("catalogd reindex needs an Elasticsearch store")
    return Reindexer(store, keep_old=keep_old, progress=progress).run()
