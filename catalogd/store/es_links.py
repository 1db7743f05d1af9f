"""Datasets in Elasticsearch: masters and their data files kept consistent at write time.

Elasticsearch has no joins (the ``parent-join`` module is not in every distribution, and
a file's master is not its parent in the routing sense), so the rule of
:mod:`catalogd.store.links` is applied when either side is written, inside the store's
write lock, and stamped into the documents: ``metadata.master``/``role`` in ``doc`` and
the ``master`` field that ``collapse`` filters on. Masters carry their ``data_files``
as a keyword field for the reverse look-up.

* ``put``: every written document gets its master from the stored masters that name it
  (found by a search on ``data_files``) and the masters in the same batch; stored files
  that a written master names now, or named before, are read back by id (real-time) or
  by a search on ``master`` and rewritten when their master changes. A batch of plain
  files costs two small searches that find nothing (measured on a loaded 2-core machine,
  20,000 documents in batches of 500: 1,400-1,900 documents/s against 1,700 without).
* ``delete``: files stamped with a deleted master are given their next master, or none.

The searches only see refreshed documents, so writes that change a dataset are written
with ``refresh=true``: the next write's look-ups see them. Masters and their parts are a
small share of a catalogue, so plain files keep the near-real-time refresh.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from elasticsearch import Elasticsearch

from catalogd.document import FileDocument, document_id
from catalogd.store import links
from catalogd.store.es_schema import keyword, path_key, source_doc

Call = Callable[[Callable[[Elasticsearch], Any]], Any]
#: Terms per look-up request (Elasticsearch allows 65,536 in one ``terms`` query).
LOOKUP_CHUNK = 1000
#: Most documents one look-up returns: more parts of one dataset than this are not
#: re-stamped when their master changes (a detector writes tens to a few thousand).
LOOKUP_MAX_HITS = 10_000


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), LOOKUP_CHUNK):
        yield values[start : start + LOOKUP_CHUNK]


def fetch(call: Call, index: str, ids: Iterable[str]) -> dict[str, FileDocument]:
    """The stored documents with these ids, read in real time (unrefreshed writes too)."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, FileDocument] = {}
    for chunk in _chunks(wanted):

        def request(c: Elasticsearch, chunk: list[str] = chunk) -> Any:
            return c.mget(index=index, ids=chunk, source=["doc"])

        for item in call(request)["docs"]:
            if item.get("found"):
                doc = source_doc(item["_source"])
                found[doc.id] = doc
    return found


def _search(call: Call, index: str, field: str, paths: Iterable[str]) -> list[FileDocument]:
    keys = sorted({path_key(p) for p in paths})
    docs: list[FileDocument] = []
    for chunk in _chunks(keys):
        body = {
            "query": {"bool": {"filter": [{"terms": {field: chunk}}]}},
            "size": LOOKUP_MAX_HITS,
            "_source": ["doc"],
        }

        def request(c: Elasticsearch, body: dict[str, Any] = body) -> Any:
            return c.search(index=index, **body)

        hits = call(request)["hits"]["hits"]
        docs.extend(source_doc(hit["_source"]) for hit in hits)
    return docs


def linked(call: Call, index: str, ids: Iterable[str]) -> list[FileDocument]:
    """Which of the stored documents with these ids are masters or parts. A search, but
    exact: every write of a master or a part is refreshed at once."""
    keys = sorted(keyword(i) for i in ids)
    docs: list[FileDocument] = []
    for chunk in _chunks(keys):
        either = [{"exists": {"field": "master"}}, {"exists": {"field": "data_files"}}]
        body = {
            "query": {
                "bool": {
                    "filter": [
                        {"terms": {"id": chunk}},
                        {"bool": {"should": either, "minimum_should_match": 1}},
                    ]
                }
            },
            "size": len(chunk),
            "_source": ["doc"],
        }

        def request(c: Elasticsearch, body: dict[str, Any] = body) -> Any:
            return c.search(index=index, **body)

        docs.extend(source_doc(hit["_source"]) for hit in call(request)["hits"]["hits"])
    return docs


def naming(call: Call, index: str, paths: Iterable[str]) -> list[FileDocument]:
    """Stored (refreshed) masters that name any of ``paths``."""
    return _search(call, index, "data_files", paths)


def stamped(call: Call, index: str, masters: Iterable[str]) -> list[FileDocument]:
    """Stored (refreshed) documents stamped as parts of any of ``masters`` (paths)."""
    return _search(call, index, "master", masters)


def _resolve_all(docs: list[FileDocument], masters: dict[str, FileDocument]) -> list[FileDocument]:
    by_path: dict[str, list[FileDocument]] = {}
    for master in masters.values():
        for path in links.data_files(master):
            by_path.setdefault(path, []).append(master)
    return [links.resolve(doc, by_path.get(doc.path, ())) for doc in docs]


def prepare_put(
    call: Call, index: str, docs: Iterable[FileDocument]
) -> tuple[list[FileDocument], bool]:
    """The documents to write for ``docs`` (resolved, plus stored files whose master
    changes) and whether the write must be refreshed at once."""
    batch = {doc.id: doc for doc in docs}
    if not batch:
        return [], False
    before = {d.id: d for d in linked(call, index, batch)}
    new_masters = {i: d for i, d in batch.items() if links.data_files(d)}
    old_masters = [d for d in before.values() if links.data_files(d)]
    # Stored files whose master may change: named now, or stamped by a rewritten master.
    named_ids = {document_id(p) for m in new_masters.values() for p in links.data_files(m)}
    others = fetch(call, index, named_ids - batch.keys())
    if new_masters or old_masters:
        paths = {m.path for m in [*new_masters.values(), *old_masters]}
        for doc in stamped(call, index, paths):
            if doc.id not in batch:
                others.setdefault(doc.id, doc)
    candidates = [*batch.values(), *others.values()]
    masters = {m.id: m for m in naming(call, index, (d.path for d in candidates))}
    for doc_id in batch:  # the batch's version of a document replaces the stored one
        masters.pop(doc_id, None)
    masters.update(new_masters)
    resolved = _resolve_all(candidates, masters)
    written = resolved[: len(batch)]
    for old, doc in zip(candidates[len(batch) :], resolved[len(batch) :], strict=True):
        if doc.metadata != old.metadata:
            written.append(doc)
    refresh = bool(
        new_masters
        or old_masters
        or len(written) > len(batch)
        or any(links.master_of(d) or links.master_of(before.get(d.id, d)) for d in written)
    )
    return written, refresh


def masters_among(call: Call, index: str, ids: Iterable[str]) -> list[str]:
    """The paths of the masters among the stored documents with these ids."""
    return [d.path for d in fetch(call, index, ids).values() if links.data_files(d)]


def after_delete(call: Call, index: str, masters: list[str]) -> list[FileDocument]:
    """Once ``masters`` (paths) are deleted and refreshed: their former parts, rewritten
    with their next master or none."""
    if not masters:
        return []
    parts = stamped(call, index, masters)
    if not parts:
        return []
    remaining = {m.id: m for m in naming(call, index, (d.path for d in parts))}
    resolved = _resolve_all(parts, remaining)
    return [new for old, new in zip(parts, resolved, strict=True) if new.metadata != old.metadata]
