"""Benchmark: Elasticsearch free text, mapping version 2's query against version 3's,
on one index at once (issue 14).

bench_api.py measures the whole API; on a loaded machine its latencies are mostly CPU
contention, the same for every query. This one isolates what changed: one index of
``--docs`` documents (bench_api's catalogue), written by this catalogd (version 3 keeps
the ``search`` lines version 2 searched, so both queries run on the same data), and
``--clients`` concurrent clients (threads, each waiting ``--think-ms`` on average between
requests, as bench_api's do) sending the API's search request for bench_api's free-text
terms (partial words, one or two terms) with a user's access filter, facets and a sort.
Each request is, at random, version 2's (``wildcard *term*`` on ``search``) or version
3's (``prefix`` on ``search_suffixes``, es_query.text_filters), so both see the same load.
Both must find the same totals (checked on every request pair of a term set).

First ``--sequential`` such pairs one at a time (each query's own cost), then the
clients. Prints, per query kind and phase, p50/p99 of the latency seen by the client and
of Elasticsearch's own ``took``, the machine's load, and the bound (p99 <= 100 ms).

    .venv/bin/python bench/bench_es_text.py [--docs 100000] [--clients 50]
        [--duration 60] [--think-ms 1000] [--sequential 200] [--es-url URL]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_api import (  # noqa: E402
    BOUND_P99_S,
    WORDS,
    drop_indices,
    fill,
    make_proposals,
    make_users,
    quantile,
)
from search_node import search_node  # noqa: E402

from catalogd.store import es_query as q  # noqa: E402
from catalogd.store.base import FACET_FIELDS, SearchQuery  # noqa: E402
from catalogd.store.elasticsearch import ElasticsearchStore  # noqa: E402
from catalogd.store.es_schema import fts_key  # noqa: E402

JSONDict = dict[str, Any]


def version_2_text(terms: tuple[str, ...]) -> list[JSONDict]:
    """Mapping version 2's free text (main before issue 14), for terms of up to 160."""
    escape = q._wildcard_escape
    return [{"wildcard": {"search": {"value": f"*{escape(fts_key(t))}*"}}} for t in terms]


def body(query: SearchQuery, version: int) -> JSONDict:
    """The request ElasticsearchStore.search sends for ``query``, with either version's
    free text."""
    clauses = q.filters(replace(query, text=None))
    clauses += q.text_filters(query.terms) if version == 3 else version_2_text(query.terms)
    return {
        "query": q.bool_query(clauses),
        "track_total_hits": True,
        "size": query.size + 1,
        "_source": ["doc"],
        "aggs": q.facet_aggs(query.facets),
        "sort": q.sort_clause(query.sort),
    }


def table(title: str, measured: tuple[dict[int, list[float]], ...]) -> None:
    latency, took = measured
    print(f"\n== {title}; load now: {os.getloadavg()}")
    print(f"{'query':<28}{'count':>7}{'p50 ms':>9}{'p99 ms':>9}{'took p50':>10}{'took p99':>10}")
    names = {2: "v2: wildcard on search", 3: "v3: prefix on suffixes"}
    for version in (2, 3):
        lat, server = latency[version], took[version]
        print(
            f"{names[version]:<28}{len(lat):>7}{quantile(lat, 0.5) * 1e3:>9.1f}"
            f"{quantile(lat, 0.99) * 1e3:>9.1f}{quantile(server, 0.5) * 1e3:>10.1f}"
            f"{quantile(server, 0.99) * 1e3:>10.1f}"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--proposals", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--think-ms", type=float, default=1000.0)
    parser.add_argument("--es-url", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sequential", type=int, default=200, help="pairs, one at a time")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    proposals = make_proposals(args.proposals, rng)
    users = make_users(500, proposals, rng)
    latency: dict[int, list[float]] = defaultdict(list)
    took: dict[int, list[float]] = defaultdict(list)
    disagree: list[str] = []
    lock = threading.Lock()
    print(
        f"{args.docs} documents, {args.clients} clients, think time {args.think_ms:.0f} ms, "
        f"{args.duration:.0f} s; load before: {os.getloadavg()}"
    )
    with search_node(args.es_url) as node:
        prefix = f"bench-es-text-{os.getpid()}"
        url = f"{node}?index={prefix}"
        try:
            fill(url, args.docs, proposals, args.seed, "acquisition")
            store = ElasticsearchStore.from_url(url)

            def pair(local: random.Random, into: tuple[dict[int, list[float]], ...]) -> None:
                """One user's free-text search, as both versions, in a random order."""
                user = local.choice(users)
                word = local.choice(WORDS)[: local.randint(3, 6)]
                text = word if local.random() < 0.7 else f"{word} {local.choice(WORDS)[:4]}"
                query = SearchQuery(
                    text=text,
                    groups=frozenset(f"{n}-group" for n in user.proposals),
                    size=local.choice((20, 50)),
                    facets=FACET_FIELDS,
                )
                totals = []
                for version in local.sample((2, 3), 2):
                    started = time.monotonic()
                    found = store.client.search(index=store.files_alias, **body(query, version))
                    elapsed = time.monotonic() - started
                    totals.append(found["hits"]["total"]["value"])
                    with lock:
                        into[0][version].append(elapsed)
                        into[1][version].append(found["took"] / 1000)
                if totals[0] != totals[1]:
                    disagree.append(text)

            # One client, no think time: each query's own cost, without queueing.
            alone: tuple[dict[int, list[float]], ...] = (defaultdict(list), defaultdict(list))
            first = random.Random(args.seed)
            for _ in range(args.sequential):
                pair(first, alone)
            table("one client at a time", alone)
            stop_at = time.monotonic() + args.duration

            def client(seed: int) -> None:
                local = random.Random(seed)
                while time.monotonic() < stop_at:
                    time.sleep(local.expovariate(1000 / args.think_ms) if args.think_ms else 0)
                    pair(local, (latency, took))

            threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            store.close()
        finally:
            drop_indices(node, prefix)
    table(f"{args.clients} clients", (latency, took))
    p99 = quantile(latency[3], 0.99)
    verdict = "within" if p99 <= BOUND_P99_S else "OVER"
    print(f"v3 p99 {p99 * 1e3:.1f} ms: {verdict} the bound (p99 <= {BOUND_P99_S * 1e3:.0f} ms)")
    if disagree:
        print(
            f"the two queries found different totals for {len(disagree)} requests: {disagree[:5]}"
        )
        return 2
    return 0 if p99 <= BOUND_P99_S else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
