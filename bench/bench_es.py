"""Benchmark: the Elasticsearch store, against a real node.

Starts its own node with ``scripts/elasticsearch.sh`` (stopped at the end), or uses
``--store http://HOST:PORT``; every run writes into indices of its own prefix and drops
them afterwards. Documents look like a beamline's: NeXus entries with a title, sample
and start time, under ``/data/visitor/blNN/pNNNNNN/vNNN/raw``.

1. **Bulk indexing**: ``--docs`` documents (at least 20,000) through ``Store.put`` for
   each bulk batch size of ``--batches`` (BULK_BATCH_DOCS set to each in turn, a fresh
   index each time), in documents per second, to justify the batch size the store uses.
2. **Search latency**: ``--searches`` queries (free text, a beamline filter, a caller's
   groups, facets, 50 per page) through ``Store.search``, and the very request body the
   store sent (captured), sent raw with the client: p50 and p99 of each, and the cost of
   the store (building the query, decoding the documents).
3. **Close-to-searchable**: ``--visible`` documents put one by one (every 20 ms) while a
   poller searches for them by id; the latency of a document is from the start of its
   ``put`` to the first search that finds it. Bound (issue 6): p99 <= 2 s.

A node it starts itself is warmed first (one unmeasured bulk of 5,000 documents).

    .venv/bin/python bench/bench_es.py [--store URL] [--docs 20000]
        [--batches 250,500,1000,2000,5000] [--searches 300] [--visible 300]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import threading
import time
from typing import Any

from search_node import search_node

from catalogd.document import FileDocument
from catalogd.store import elasticsearch as es_module
from catalogd.store.base import SearchQuery
from catalogd.store.elasticsearch import ElasticsearchStore

BOUND_P99_S = 2.0
SAMPLES = ("lysozyme", "thaumatin", "insulin", "proteinase K", "ferritin", "glucose isomerase")


def make_doc(i: int, tag: str = "") -> FileDocument:
    bl, p, v = i % 12, (i // 50) % 400, (i // 10) % 30
    proposal = f"2024{bl:02d}{p:04d}"
    path = f"/data/visitor/bl{bl:02d}/{proposal}/v{v:03d}/raw/scan_{tag}{i:07d}.nxs"
    sample = SAMPLES[i % len(SAMPLES)]
    entry = {
        "name": "entry",
        "definition": "NXmx",
        "title": f"{sample} crystal {i % 97} {tag} rotation scan",
        "start_time": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:{i % 60:02d}:00+00:00",
        "sample": {"name": sample, "chemical_formula": "C613H959N193O185S10"},
        "instrument": {"name": f"BL{bl:02d}", "source": {"name": "MAX IV", "type": "Synchrotron"}},
        "users": [{"name": "A. User", "affiliation": "Lund University"}],
    }
    return FileDocument(
        id=hashlib.blake2b(path.encode(), digest_size=16).hexdigest(),
        path=path,
        name=path.rsplit("/", 1)[1],
        size=10_000_000 + i,
        mtime=1.7e9 + i,
        ctime=1.7e9 + i,
        inode=1000 + i,
        dev=2049,
        uid=1000,
        gid=2000,
        owner=f"bl{bl:02d}-service",
        group=f"{proposal}-group",
        mode=0o100660,
        level="inside",
        user_type="visitor",
        beamline=f"bl{bl:02d}",
        proposal=proposal,
        visit=f"v{v:03d}",
        area="raw",
        access_groups=(f"{proposal}-group",),
        kind="nexus",
        entries=(entry,),
        metadata={"hdf5": {"datasets": 12, "groups": 9}},
        indexed_at=time.time(),
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def drop(store: ElasticsearchStore) -> None:
    """Close ``store`` and delete its indices and templates."""
    client = store.client
    store.flush()
    indices = list(client.indices.get(index=f"{store.prefix}-*", expand_wildcards="all"))
    if indices:
        client.indices.delete(index=",".join(indices))
    for template in client.indices.get_index_template(name=f"{store.prefix}-*")["index_templates"]:
        client.indices.delete_index_template(name=template["name"])
    store._closed = True  # the indices are gone: nothing to flush
    client.close()


def bench_bulk(
    url: str, docs: list[FileDocument], batches: list[int], *, quiet: bool = False
) -> dict[int, float]:
    rates: dict[int, float] = {}
    default = es_module.BULK_BATCH_DOCS
    try:
        for size in batches:
            es_module.BULK_BATCH_DOCS = size
            store = ElasticsearchStore.from_url(f"{url}?index=bench-bulk-{size}")
            try:
                started = time.perf_counter()
                store.put(docs)
                store.flush()
                elapsed = time.perf_counter() - started
                assert store.count() == len(docs)
                rates[size] = len(docs) / elapsed
                marker = " (BULK_BATCH_DOCS)" if size == default else ""
                if not quiet:
                    print(f"  batch {size:>5}: {rates[size]:>9,.0f} documents/s{marker}")
            finally:
                drop(store)
    finally:
        es_module.BULK_BATCH_DOCS = default
    return rates


def bench_search(store: ElasticsearchStore, searches: int) -> tuple[list[float], list[float]]:
    rng = random.Random(6)
    queries = [
        SearchQuery(
            text=rng.choice(["lysozyme", "crystal 4", "rotation", "thaum", "scan_00"]),
            beamline=rng.choice([None, "bl03", "bl07"]),
            groups=frozenset({f"2024{b:02d}{p:04d}-group" for b in range(12) for p in range(40)}),
            size=50,
        )
        for _ in range(searches)
    ]
    captured: list[dict[str, Any]] = []
    client = store.client
    original = client.search

    def recording(**kwargs: Any) -> Any:
        captured.append(kwargs)
        return original(**kwargs)

    via_store: list[float] = []
    for query in queries[:20]:  # warm both paths' caches alike
        store.search(query)
    client.search = recording  # type: ignore[method-assign]
    try:
        for query in queries:
            started = time.perf_counter()
            store.search(query)
            via_store.append(time.perf_counter() - started)
    finally:
        client.search = original  # type: ignore[method-assign]
    raw: list[float] = []
    for body in captured:
        started = time.perf_counter()
        client.search(**body)
        raw.append(time.perf_counter() - started)
    return via_store, raw


def bench_visible(store: ElasticsearchStore, count: int) -> list[float]:
    """Put ``count`` documents one by one; for each, the time until a search finds it.

    The poller asks for the ids not yet seen (a raw ``ids`` query without sources, so
    polling costs the writer nothing): what it measures is when the index made the
    document searchable, as every search (the store's too) sees it."""
    tag = f"vis{int(time.time())}"
    put_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()

    def poll() -> None:
        client = store.client
        deadline = float("inf")
        while time.perf_counter() < deadline:
            with lock:
                pending = [i for i in put_at if i not in seen_at]
            if done.is_set():
                if not pending:
                    return
                deadline = min(deadline, time.perf_counter() + 30)
            if pending:
                found = client.search(
                    index=store.files_alias,
                    query={"ids": {"values": pending}},
                    source=False,
                    size=len(pending),
                )
                now = time.perf_counter()
                for hit in found["hits"]["hits"]:
                    seen_at.setdefault(hit["_id"], now)
            time.sleep(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for i in range(count):
            doc = make_doc(i, tag)
            started = time.perf_counter()
            with lock:
                put_at[doc.id] = started
            store.put([doc])
            time.sleep(max(0.0, 0.02 - (time.perf_counter() - started)))
    finally:
        done.set()
        poller.join()
    return [seen_at[i] - put_at[i] if i in seen_at else float("inf") for i in put_at]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", metavar="URL", help="an Elasticsearch node (default: own)")
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--batches", default="250,500,1000,2000,5000")
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--visible", type=int, default=300)
    args = parser.parse_args()
    docs = [make_doc(i) for i in range(max(args.docs, 1))]
    batches = [int(b) for b in args.batches.split(",")]

    with search_node(args.store) as url:
        print(f"Elasticsearch at {url}; {len(docs):,} documents")
        if not args.store:  # a node just started: warm its JIT and caches first
            bench_bulk(url, docs[:5000], [es_module.BULK_BATCH_DOCS], quiet=True)
        print("bulk indexing (Store.put, then flush):")
        rates = bench_bulk(url, docs, batches)
        best = max(rates, key=lambda b: rates[b])
        default = es_module.BULK_BATCH_DOCS
        if default in rates:
            share = rates[default] / rates[best]
            print(
                f"  fastest: batch {best} ({rates[best]:,.0f}/s); BULK_BATCH_DOCS = {default} "
                f"reaches {share:.0%} of it"
            )

        store = ElasticsearchStore.from_url(f"{url}?index=bench-search")
        try:
            store.put(docs)
            store.flush()
            via_store, raw = bench_search(store, args.searches)
            s50, s99 = percentile(via_store, 50) * 1000, percentile(via_store, 99) * 1000
            r50, r99 = percentile(raw, 50) * 1000, percentile(raw, 99) * 1000
            print(f"search latency over {len(raw)} queries (50 per page, facets, groups):")
            print(f"  through the store: p50 {s50:7.2f} ms   p99 {s99:7.2f} ms")
            print(f"  same body, raw:    p50 {r50:7.2f} ms   p99 {r99:7.2f} ms")
            overhead = statistics.median(via_store) - statistics.median(raw)
            print(f"  store overhead at the median: {overhead * 1000:+.2f} ms")

            latencies = bench_visible(store, args.visible)
            lost = sum(1 for x in latencies if x == float("inf"))
            v50, v99 = percentile(latencies, 50), percentile(latencies, 99)
            verdict = "within" if v99 <= BOUND_P99_S and not lost else "OVER"
            print(f"close-to-searchable over {len(latencies)} documents (put -> found):")
            print(
                f"  p50 {v50:.3f} s   p99 {v99:.3f} s   max {max(latencies):.3f} s   "
                f"{verdict} the {BOUND_P99_S:g} s bound" + (f"; {lost} never found" if lost else "")
            )
        finally:
            drop(store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
