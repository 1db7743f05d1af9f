"""Benchmark: how the catalogue behaves as it grows (issue 15, the plan for 10^9 files).

Indexes synthetic documents at increasing counts (10^4, 10^5, 10^6 up to ``--max``) into
the embedded SQLite store and into Elasticsearch, growing one catalogue of each, and
prints at each size: the ingest rate of the step (documents per second through
``Store.put`` in batches of ``--batch``, flushed), search p50/p99 (``--searches``
queries of four kinds: free text, beamline + proposal filter, a caller's groups with
facets, a subtree), and bytes on disk per document (SQLite: the database and its WAL;
Elasticsearch: the primary store of the files index after a flush). At the largest
size it times ``catalogd reindex`` (the alias swap) on Elasticsearch. With
``--rss-dirs N[,N...]`` it also measures the memory of ``catalogd run`` watching trees of N
directories with inotify (VmRSS and VmHWM once the reconcile at start is done, and the
RSS of its child processes).

The corpus: each document is built by catalogd's own document builder
(catalogd.document.DocumentBuilder: the layout classification, access groups, name
look-ups) from a stat result, for a path of a facility-shaped tree
(``/data/<visitor|staff|proprietary>/<20 beamlines>/<proposal>/<visit>/raw/...``, 250
files per visit, 10 visits per proposal), merged with the metadata catalogd's indexers
extract from a real NXmx file written with h5py (the entry's title, sample and start
time varied per document), as the daemon does.

    flock /tmp/bench.lock .venv/bin/python bench/bench_scale.py [--max 1000000]
        [--kinds sqlite,es] [--store http://HOST:PORT] [--searches 200] [--rss-dirs 50000]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from elasticsearch import Elasticsearch
from search_node import search_node

from catalogd.document import DocumentBuilder, FileDocument
from catalogd.identity import NameCache
from catalogd.layout import LayoutConfig
from catalogd.store.base import SearchQuery, Store
from catalogd.store.elasticsearch import ElasticsearchStore
from catalogd.store.sqlite import SQLiteStore
from indexers.base import ExtractResult
from indexers.registry import Registry
from indexers.settings import IndexerSettings

CATALOGD = [sys.executable, "-c", "import sys; from catalogd.cli import main; sys.exit(main())"]
USER_TYPES = ("visitor", "visitor", "visitor", "staff", "proprietary")
BEAMLINES = tuple(f"bl{i:02d}" for i in range(20))
SAMPLES = ("lysozyme", "thaumatin", "insulin", "proteinase K", "ferritin", "glucose isomerase")
FILES_PER_VISIT = 250
VISITS_PER_PROPOSAL = 10
LAYOUT = LayoutConfig(root="/data")


# -- the corpus -----------------------------------------------------------------------------
def template_result(directory: Path) -> ExtractResult:
    """What catalogd's indexers read from one real NXmx master written with h5py."""
    path = directory / "template_master.h5"
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["definition"] = "NXmx"
        entry["title"] = "lysozyme crystal 1 rotation scan"
        entry["start_time"] = "2024-03-01T10:00:00+00:00"
        entry["end_time"] = "2024-03-01T10:02:00+00:00"
        entry["experiment_identifier"] = "20240001"
        entry["program_name"] = "MXCuBE"
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        sample["name"] = "lysozyme"
        sample["chemical_formula"] = "C613H959N193O185S10"
        instrument = entry.create_group("instrument")
        instrument.attrs["NX_class"] = "NXinstrument"
        instrument["name"] = "BioMAX"
        source = instrument.create_group("source")
        source.attrs["NX_class"] = "NXsource"
        source["name"] = "MAX IV 3 GeV ring"
        source["type"] = "Synchrotron X-ray Source"
        detector = instrument.create_group("detector")
        detector.attrs["NX_class"] = "NXdetector"
        detector["description"] = "Dectris EIGER2 X 16M"
        detector["count_time"] = 0.011
        user = entry.create_group("user_01")
        user.attrs["NX_class"] = "NXuser"
        user["name"] = "A. User"
        user["affiliation"] = "Lund University"
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.create_dataset("data", data=np.zeros((4, 64, 64), dtype=np.uint16))
    with Registry.from_entry_points(settings=IndexerSettings(isolation="inline")) as registry:
        result = registry.extract(str(path))
    if not result.ok or not result.entries:
        sys.exit(f"the indexers could not read the template: {result.error}")
    return result


class Corpus:
    """Document ``i`` of a facility-shaped tree, built as the daemon builds it."""

    def __init__(self, template: ExtractResult) -> None:
        self.template = template
        self.builder = DocumentBuilder(LAYOUT, NameCache(), time.time)

    @staticmethod
    def path(i: int) -> str:
        visit_no, n = divmod(i, FILES_PER_VISIT)
        proposal_no, v = divmod(visit_no, VISITS_PER_PROPOSAL)
        user_type = USER_TYPES[proposal_no % len(USER_TYPES)]
        beamline = BEAMLINES[proposal_no % len(BEAMLINES)]
        proposal = f"{2017 + proposal_no % 8}{proposal_no:05d}"
        visit = f"{2017 + proposal_no % 8}{1 + v % 12:02d}{1 + v % 28:02d}08"
        return f"/data/{user_type}/{beamline}/{proposal}/{visit}/raw/scan_{n:04d}.nxs"

    def doc(self, i: int) -> FileDocument:
        path = self.path(i)
        t = 1.7e9 + i
        st = os.stat_result((0o100640, 10_000_000 + i, 2049, 1, 1000, 2000, 2_000_000, t, t, t))
        sample = SAMPLES[i % len(SAMPLES)]
        entry = dict(self.template.entries[0])
        entry["title"] = f"{sample} crystal {i % 97} rotation scan {i}"
        entry["start_time"] = (
            f"20{17 + i % 8}-{1 + i % 12:02d}-{1 + i % 28:02d}T10:{i % 60:02d}:00Z"
        )
        entry["sample"] = {**entry.get("sample", {}), "name": sample}
        result = dataclasses.replace(self.template, path=path, entries=(entry,))
        doc = self.builder.build(path, st)
        return doc.with_changes(
            kind=result.kind,
            entries=result.entries,
            metadata=dict(result.metadata),
            error=result.error,
        )


# -- measuring ------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def queries(count: int, n_docs: int) -> Iterator[SearchQuery]:
    corpus_paths = [Corpus.path(i * 7919 % n_docs) for i in range(count)]
    for i, path in enumerate(corpus_paths):
        parts = path.split("/")
        kind = i % 4
        if kind == 0:
            yield SearchQuery(text=f"{SAMPLES[i % len(SAMPLES)].split()[0]} crystal", size=50)
        elif kind == 1:
            yield SearchQuery(beamline=parts[3], proposal=parts[4], size=50)
        elif kind == 2:
            groups = frozenset({f"{parts[4]}-group", f"{parts[3]}"})
            yield SearchQuery(text="rotation", groups=groups, size=50)
        else:
            yield SearchQuery(path_prefix="/".join(parts[:6]), size=50, facets=())


def search_latencies(store: Store, count: int, n_docs: int) -> list[float]:
    out = []
    for query in queries(count, n_docs):
        started = time.perf_counter()
        store.search(query)
        out.append(time.perf_counter() - started)
    return out


def sqlite_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def es_bytes(store: ElasticsearchStore) -> int:
    client = store.client
    client.indices.flush(index=store.files_alias)
    stats = client.indices.stats(index=store.files_alias, metric="store,docs")
    return int(stats["_all"]["primaries"]["store"]["size_in_bytes"])


def drop_indices(url: str, prefix: str) -> None:
    """Delete the indices of ``prefix`` (a client of its own: after the store closed,
    since closing a store refreshes its indices)."""
    with Elasticsearch(url) as client:
        names = list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all"))
        if names:
            client.indices.delete(index=",".join(names))


def grow(
    stores: dict[str, tuple[Store, Any]],
    corpus: Corpus,
    sizes: list[int],
    *,
    batch: int,
    searches: int,
) -> list[dict[str, Any]]:
    """Grow every store of ``stores`` (name -> (store, its bytes on disk)) to each size in
    turn, each batch built once and put into each store, timed per store."""
    rows = []
    done = 0
    for target in sizes:
        added = target - done
        spent = dict.fromkeys(stores, 0.0)
        build_s = 0.0
        while done < target:
            b0 = time.perf_counter()
            docs = [corpus.doc(i) for i in range(done, min(target, done + batch))]
            build_s += time.perf_counter() - b0
            for name, (store, _) in stores.items():
                t0 = time.perf_counter()
                store.put(docs)
                spent[name] += time.perf_counter() - t0
            done += len(docs)
        for name, (store, size_of) in stores.items():
            t0 = time.perf_counter()
            store.flush()
            spent[name] += time.perf_counter() - t0
            assert store.count() == target, (name, store.count(), target)
            latencies = search_latencies(store, searches, target)
            row = {
                "store": name,
                "docs": target,
                "ingest_docs_per_s": round(added / spent[name]),
                "build_docs_per_s": round(added / build_s),
                "search_p50_ms": round(1000 * statistics.median(latencies), 1),
                "search_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
                "bytes_per_doc": round(size_of() / target),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# -- several daemons writing one alias at once --------------------------------------------
def _writer(corpus: Corpus, url: str, lo: int, hi: int, batch: int, ready: Any, go: Any) -> None:
    """One daemon's share: documents ``lo`` .. ``hi`` (their own paths, so their own
    subtree), built before the clock starts and put in ``batch``-document bulks."""
    docs = [corpus.doc(i) for i in range(lo, hi)]
    store = ElasticsearchStore.from_url(url)
    ready.release()
    go.wait()
    for start in range(0, len(docs), batch):
        store.put(docs[start : start + batch])
    store.flush()
    store.close()


def parallel_ingest(
    corpus: Corpus, url: str, writers: int, total: int, batch: int
) -> dict[str, Any]:
    """``writers`` processes (one per daemon) writing ``total`` documents between them
    into one alias at the same time; the aggregate ingest rate."""
    prefix = f"benchscale-w{writers}-{os.getpid()}"
    store = ElasticsearchStore.from_url(f"{url}?index={prefix}")  # the indices, made once
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    share = total // writers
    procs = [
        ctx.Process(
            target=_writer,
            args=(corpus, f"{url}?index={prefix}", k * share, (k + 1) * share, batch, ready, go),
        )
        for k in range(writers)
    ]
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.acquire()
        started = time.perf_counter()
        go.set()
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
        if any(proc.exitcode != 0 for proc in procs):
            sys.exit(f"a writer failed: {[proc.exitcode for proc in procs]}")
        store.flush()
        written = store.count()
        assert written == share * writers, (written, share * writers)
        return {
            "writers": writers,
            "docs": written,
            "elapsed_s": round(elapsed, 1),
            "ingest_docs_per_s_total": round(written / elapsed),
        }
    finally:
        store.close()
        drop_indices(url, prefix)


# -- memory of a daemon watching many directories ------------------------------------------
def build_dirs(root: Path, directories: int) -> int:
    """A /data tree of about ``directories`` directories: visits with raw/ and process/
    and 16 scan directories in raw/, one small file in each scan directory."""
    made = 0
    visit_no = 0
    while made < directories:
        proposal_no = visit_no // VISITS_PER_PROPOSAL
        visit = (
            root
            / USER_TYPES[proposal_no % len(USER_TYPES)]
            / BEAMLINES[proposal_no % len(BEAMLINES)]
            / f"2024{proposal_no:05d}"
            / f"202403{1 + visit_no % 28:02d}08"
        )
        for i in range(16):
            scan = visit / "raw" / f"scan_{i:02d}"
            scan.mkdir(parents=True)
            (scan / "frame_00001.cbf").write_bytes(b"###CBF: VERSION 1.5\r\n")
        (visit / "process").mkdir()
        made += 19
        visit_no += 1
    return sum(1 for _ in root.rglob("*") if _.is_dir()) + 1


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])  # kB
    return out


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (extraction workers and the like), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(kids)
        todo.extend(kids)
    return found


def daemon_memory(directories: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="catalogd-bench-rss-"))
    try:
        root = work / "data"
        counted = build_dirs(root, directories)
        (work / "none.toml").write_text("")
        state = work / "state"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
        env.update(
            CATALOGD_CONFIG=str(work / "none.toml"),
            CATALOGD_DAEMON_SOURCE="inotify",
            CATALOGD_DAEMON_STATE_DIR=str(state),
            CATALOGD_DAEMON_LISTEN="",
        )
        args = [*CATALOGD, "run", "--root", str(root), "--store", f"sqlite:///{work}/c.db"]
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
        status: dict[str, Any] = {}
        try:
            while not (status.get("reconciled_at_start") and status.get("watching")):
                if proc.poll() is not None:
                    sys.exit(f"catalogd run exited with {proc.returncode}")
                time.sleep(0.5)
                try:
                    status = json.loads((state / "status.json").read_text())
                except (OSError, ValueError):
                    status = {}
            ready_s = time.perf_counter() - started
            time.sleep(2.0)
            mem = proc_status(proc.pid)
            children = [proc_status(child) for child in descendants(proc.pid)]
        finally:
            proc.terminate()
            proc.wait(60)
        return {
            "directories": counted,
            "source": status.get("source"),
            "reason": status.get("reason"),
            "ready_s": round(ready_s, 1),
            "rss_mib": round(mem["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(mem["VmHWM"] / 1024, 1),
            "child_processes": len(children),
            "children_rss_mib": round(sum(c.get("VmRSS", 0) for c in children) / 1024, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max", type=int, default=1_000_000, help="largest catalogue size")
    parser.add_argument("--kinds", default="sqlite,es", help="stores to grow (sqlite, es)")
    parser.add_argument("--store", metavar="URL", help="an Elasticsearch node (default: own)")
    parser.add_argument("--batch", type=int, default=1000, help="documents per put")
    parser.add_argument("--searches", type=int, default=200)
    parser.add_argument("--no-reindex", action="store_true")
    parser.add_argument(
        "--rss-dirs",
        default="",
        metavar="N[,N...]",
        help="also measure catalogd run RSS watching trees of N directories",
    )
    parser.add_argument(
        "--writers",
        default="",
        metavar="N[,N...]",
        help="also time N processes writing one Elasticsearch alias at once (several daemons)",
    )
    parser.add_argument(
        "--writer-docs", type=int, default=100_000, help="documents the writers share"
    )
    args = parser.parse_args()
    sizes = [n for n in (10_000, 100_000, 1_000_000, 10_000_000) if n <= args.max]
    if not sizes or sizes[-1] != args.max:
        sizes.append(args.max)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    print(f"# {os.cpu_count()} CPUs (shared with other work); sizes {sizes}", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="catalogd-bench-scale-"))
    rows: list[dict[str, Any]] = []
    try:
        corpus = Corpus(template_result(work))
        print(
            f"# a document: {len(json.dumps(dataclasses.asdict(corpus.doc(0)), default=str))} "
            f"bytes of JSON, e.g. {corpus.path(123_456)}",
            file=sys.stderr,
        )
        with contextlib.ExitStack() as stack:
            stores: dict[str, tuple[Store, Any]] = {}
            if "sqlite" in kinds:
                db = work / "scale.db"
                sqlite_store = stack.enter_context(SQLiteStore(str(db)))
                stores["sqlite"] = (sqlite_store, lambda: sqlite_bytes(db))
            es_store: ElasticsearchStore | None = None
            if "es" in kinds:
                url = stack.enter_context(search_node(args.store, heap="1g"))
                prefix = f"benchscale-{os.getpid()}"
                es_store = ElasticsearchStore.from_url(f"{url}?index={prefix}")
                stack.callback(drop_indices, url, prefix)  # after close (LIFO)
                stack.callback(es_store.close)
                stores["elasticsearch"] = (es_store, lambda: es_bytes(es_store))
            rows = grow(stores, corpus, sizes, batch=args.batch, searches=args.searches)
            if es_store is not None and not args.no_reindex:
                from catalogd.store.es_reindex import reindex

                result = reindex(es_store)
                per_million = result.elapsed_s * 1_000_000 / max(1, result.copied)
                print(
                    json.dumps(
                        {
                            "reindex_docs": result.copied,
                            "reindex_s": round(result.elapsed_s, 1),
                            "reindex_s_per_million": round(per_million, 1),
                        }
                    ),
                    flush=True,
                )
            if "es" in kinds:
                for writers in [int(n) for n in args.writers.split(",") if n.strip()]:
                    row = parallel_ingest(corpus, url, writers, args.writer_docs, args.batch)
                    print(json.dumps({"parallel_ingest": row}), flush=True)
        for directories in [int(n) for n in args.rss_dirs.split(",") if n.strip()]:
            print(json.dumps({"catalogd_run_memory": daemon_memory(directories)}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by_store: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_store.setdefault(row["store"], []).append(row)
    for kind, grown in by_store.items():
        first, last = grown[0], grown[-1]
        print(
            f"{kind}: {first['docs']:,} -> {last['docs']:,} documents: ingest "
            f"{first['ingest_docs_per_s']:,} -> {last['ingest_docs_per_s']:,} docs/s, search p99 "
            f"{first['search_p99_ms']} -> {last['search_p99_ms']} ms, "
            f"{first['bytes_per_doc']:,} -> {last['bytes_per_doc']:,} bytes/doc"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
