"""Benchmark: the same store on Elasticsearch 9.5.0 and OpenSearch 3.3.0, in one run.

Starts one node of each (``scripts/elasticsearch.sh``, ``scripts/opensearch.sh``: the
minimal distributions, 512 MiB heap each, loopback), side by side, and alternates the
engines round by round so both see the same machine load:

1. **Bulk**: ``--docs`` documents (bench/bench_es.py's beamline-like NeXus documents)
   through ``Store.put`` (the store's batch size) and ``flush()``, into a fresh index,
   in documents per second; ``--rounds`` rounds per engine.
2. **Search**: ``--searches`` queries through ``Store.search`` (bench_es's mix: free
   text, a beamline filter, a caller's 480 groups, 50 per page), p50 and p99.
3. **The adapter's cost** (OpenSearch only): ``--searches`` search requests (a filter, a
   text match, a facet) through catalogd's adapter (catalogd/store/os_client.py) and
   through plain ``opensearch-py``, alternately, p50 and p99 of each.

Each node is warmed first (one unmeasured bulk of 5,000 documents). Prints the load
average before and after.

    .venv/bin/python bench/bench_engines.py [--docs 20000] [--rounds 2] [--searches 300]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_es import bench_search, drop, make_doc, percentile  # noqa: E402
from opensearchpy import OpenSearch  # noqa: E402
from search_node import search_node  # noqa: E402

from catalogd.document import FileDocument  # noqa: E402
from catalogd.store.elasticsearch import ElasticsearchStore  # noqa: E402

ENGINES = ("elasticsearch", "opensearch")


def open_store(url: str, engine: str, name: str) -> ElasticsearchStore:
    return ElasticsearchStore.from_url(f"{url}?index=bench-{name}&engine={engine}")


def bulk_rate(url: str, engine: str, docs: list[FileDocument], name: str) -> float:
    store = open_store(url, engine, name)
    try:
        started = time.perf_counter()
        store.put(docs)
        store.flush()
        elapsed = time.perf_counter() - started
        assert store.count() == len(docs)
        return len(docs) / elapsed
    finally:
        drop(store)


def adapter_cost(store: ElasticsearchStore, url: str, bodies: list[dict[str, Any]]) -> None:
    """The same bodies through the adapter and through plain opensearch-py."""
    adapter: list[float] = []
    plain: list[float] = []
    with OpenSearch(url) as raw:
        for body in bodies:
            fields = dict(body)
            index = fields.pop("index")
            started = time.perf_counter()
            store.client.search(index=index, **fields)
            adapter.append(time.perf_counter() - started)
            started = time.perf_counter()
            raw.search(index=index, body=fields)
            plain.append(time.perf_counter() - started)
    print(f"  through the adapter: {summary(adapter)}")
    print(f"  plain opensearch-py: {summary(plain)}")


def summary(times: list[float]) -> str:
    median, p99 = statistics.median(times) * 1000, percentile(times, 99) * 1000
    return f"p50 {median:6.1f} ms, p99 {p99:6.1f} ms"


def request_bodies(store: ElasticsearchStore, count: int) -> list[dict[str, Any]]:
    """``count`` searches of the files alias: 50 documents of a beamline, a text
    filter, and a facet without hits, in turn (the adapter's cost does not depend on
    what is asked)."""
    alias = store.files_alias
    kinds: list[dict[str, Any]] = [
        {"query": {"term": {"beamline": "bl03"}}, "size": 50, "_source": ["doc"]},
        {"query": {"match": {"title": "lysozyme"}}, "size": 50, "_source": ["doc"]},
        {"size": 0, "aggs": {"b": {"terms": {"field": "beamline"}}}},
    ]
    return [dict(kinds[i % len(kinds)], index=alias) for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--searches", type=int, default=300)
    args = parser.parse_args()
    # A timeout's SIGTERM still stops the nodes (the ExitStack below unwinds).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    docs = [make_doc(i) for i in range(args.docs)]
    with ExitStack() as stack:
        urls = {e: stack.enter_context(search_node(None, engine=e)) for e in ENGINES}
        print(f"load average at start: {Path('/proc/loadavg').read_text().strip()}")
        for engine, url in urls.items():
            bulk_rate(url, engine, [make_doc(i, "warm") for i in range(5000)], "warm")
        rates: dict[str, list[float]] = {engine: [] for engine in ENGINES}
        for round_ in range(args.rounds):
            for engine, url in urls.items():
                rates[engine].append(bulk_rate(url, engine, docs, f"bulk-{round_}"))
        print(f"bulk, {args.docs:,} documents through Store.put, documents/s per round:")
        for engine, found in rates.items():
            print(f"  {engine:>13}: " + ", ".join(f"{r:,.0f}" for r in found))
        print(f"search, {args.searches} queries through Store.search:")
        stores = {engine: open_store(url, engine, "search") for engine, url in urls.items()}
        try:
            for store in stores.values():
                store.put(docs)
                store.flush()
            for engine, store in stores.items():
                via_store, raw = bench_search(store, args.searches)
                print(f"  {engine:>13}: {summary(via_store)} (its client raw: {summary(raw)})")
            print(f"the adapter's cost, OpenSearch, {args.searches} requests each way:")
            opensearch = stores["opensearch"]
            adapter_cost(opensearch, urls["opensearch"], request_bodies(opensearch, args.searches))
        finally:
            for store in stores.values():
                drop(store)
        print(f"load average at end: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
