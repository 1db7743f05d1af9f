"""``catalogd reindex``: the next index version, filled, caught up and swapped in while
searches and writes go on, against the real node of tests/es_node.py."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from es_node import Node, client, es, es_node, prefix
from ops_daemon import CATALOGD
from test_store_contract import entry, make_doc

from catalogd.document import FileDocument
from catalogd.errors import StoreError
from catalogd.store import elasticsearch as es_module
from catalogd.store import es_reindex
from catalogd.store.base import SearchQuery
from catalogd.store.elasticsearch import ElasticsearchStore
from catalogd.store.es_errors import SchemaOutdated
from catalogd.store.es_reindex import reindex
from catalogd.store.es_schema import (
    FILES_MAPPING,
    SCHEMA_VERSION,
    added_since,
    doc_source,
    files_alias,
    versioned,
)

__all__ = ["client", "es", "es_node", "prefix"]  # fixtures used below

P = "/data/visitor/biomax/20170251/2017112208/raw"


def doc(i: int, size: int = 100) -> FileDocument:
    return make_doc(f"{P}/scan{i:05d}.h5", size=size)


def behind_alias(client: Elasticsearch, alias: str) -> list[str]:
    return sorted(client.indices.get_alias(name=alias).body)


def filled(es: ElasticsearchStore, client: Elasticsearch, count: int) -> str:
    """The index behind ``es``'s alias, after ``count`` documents were written to it."""
    es.put([doc(i) for i in range(count)])
    es.flush()
    (index,) = behind_alias(client, es.files_alias)
    return index


def run_cli(tmp: Path, *args: str, config: str = "") -> subprocess.CompletedProcess[str]:
    (tmp / "catalogd.toml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    env["CATALOGD_CONFIG"] = str(tmp / "catalogd.toml")
    return subprocess.run(
        [*CATALOGD, *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_searches_answer_and_writes_land_throughout_a_reindex(
    es: ElasticsearchStore, es_node: Node, prefix: str, client: Elasticsearch
) -> None:
    es.put([doc(i) for i in range(3000)])
    es.flush()
    old = behind_alias(client, es.files_alias)
    stop = threading.Event()
    totals: list[int] = []
    failures: list[BaseException] = []
    written: dict[str, int] = {}

    def search() -> None:
        with ElasticsearchStore.from_url(es_node.store_url(prefix)) as reader:
            while not stop.is_set():
                try:
                    totals.append(reader.search(SearchQuery(text="scan", size=5)).total)
                except BaseException as exc:  # every search must answer
                    failures.append(exc)

    def write() -> None:
        with ElasticsearchStore.from_url(es_node.store_url(prefix)) as writer:
            n = 0
            while not stop.is_set():
                new, changed = doc(10_000 + n), doc(n % 3000, size=1000 + n)
                try:
                    writer.put([new, changed])
                except BaseException as exc:
                    failures.append(exc)
                    return
                written[new.id] = new.size
                written[changed.id] = changed.size
                n += 1
                time.sleep(0.005)

    threads = [threading.Thread(target=search), threading.Thread(target=write)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        result = reindex(es)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, failures[:3]
    assert len(totals) > 20 and totals[0] >= 3000
    assert all(b >= a for a, b in zip(totals, totals[1:], strict=False)), "a total dropped"

    new_index = behind_alias(client, es.files_alias)
    assert new_index == [result.target] != old
    assert not client.indices.exists(index=old[0])  # deleted after the swap
    es.flush()
    stored = {d.id: d.size for d in es.iter_documents()}
    assert len(stored) == 3000 + sum(
        1 for i in written if i not in {doc(j).id for j in range(3000)}
    )
    assert all(stored[i] == size for i, size in written.items()), "a write was lost"
    assert result.copied >= 3000 and result.caught_up > 0


def test_writes_and_deletes_during_the_fill_are_caught_up(
    es: ElasticsearchStore, es_node: Node, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(es_reindex, "BULK_BATCH_DOCS", 500)
    es.put([doc(i) for i in range(2000)])
    es.flush()
    writer = ElasticsearchStore.from_url(es_node.store_url(prefix))
    done: list[int] = []

    def meanwhile(copied: int, total: int) -> None:
        if copied == 1000 and not done:  # half copied: change both halves, add, delete
            writer.put([doc(5, size=55), doc(1500, size=1515), doc(9000)])
            writer.delete([doc(6).id, doc(1600).id])
            done.append(copied)

    try:
        result = reindex(es, progress=meanwhile)
    finally:
        writer.close()
    assert done == [1000]
    es.flush()
    sizes = {d.name: d.size for d in es.iter_documents()}
    assert len(sizes) == 2000 + 1 - 2
    assert (sizes["scan00005.h5"], sizes["scan01500.h5"], sizes["scan09000.h5"]) == (55, 1515, 100)
    assert "scan00006.h5" not in sizes and "scan01600.h5" not in sizes
    assert result.deleted == 2 and result.caught_up >= 3


def test_an_outdated_index_says_run_reindex_and_reindex_applies_the_mapping(
    es: ElasticsearchStore, es_node: Node, prefix: str, client: Elasticsearch, tmp_path: Path
) -> None:
    index = filled(es, client, 10)
    # An index from an older catalogd, which no in-place mapping change brings up to date
    # (version 0 has no added-fields step), with a document whose indexed fields are not
    # what this catalogd's encoding gives (its free text is missing).
    assert added_since(0) is None
    client.indices.put_mapping(index=index, meta={"schema_version": 0})
    stale = doc(99)
    source = doc_source(stale)
    source["search"] = source["search_suffixes"] = []
    client.index(index=index, id=stale.id, document=source, refresh=True)
    url = es_node.store_url(prefix)
    with pytest.raises(SchemaOutdated, match="run `catalogd reindex --store"):
        ElasticsearchStore.from_url(url)
    refused = run_cli(tmp_path, "search", "--store", url, "--json")
    assert refused.returncode == 78 and "catalogd reindex" in refused.stderr

    done = run_cli(tmp_path, "reindex", "--store", url, "--keep-old")
    assert done.returncode == 0, done.stderr
    assert "reindexed 11 documents" in done.stderr and f"{index} kept" in done.stderr
    with ElasticsearchStore.from_url(url) as store:  # the version check passes now
        found = store.search(SearchQuery(text="scan00099"))
        assert [d.name for d in found.items] == ["scan00099.h5"]  # encoded again
        assert store.index_version()[1] == SCHEMA_VERSION
    (now,) = behind_alias(client, f"{prefix}-files")
    assert now != index and client.indices.exists(index=index)
    client.index(index=index, id="x", document={"id": "x"})  # kept, and writable again


def test_a_version_2_index_is_refused_until_reindex_gives_it_the_free_text_suffixes(
    es_node: Node, prefix: str, client: Elasticsearch
) -> None:
    # An index as catalogd wrote it with mapping version 2: no suffix fields, free text
    # only in the ``search`` lines (matched by wildcard queries then).
    alias = files_alias(prefix)
    new_fields = {"search_suffixes", "search_overflow"}
    v2 = {k: v for k, v in FILES_MAPPING.items() if k != "_source"}
    v2["properties"] = {k: v for k, v in FILES_MAPPING["properties"].items() if k not in new_fields}
    v2["_meta"] = {"schema_version": 2}
    client.indices.create(index=versioned(alias, 2), mappings=v2, aliases={alias: {}})
    docs = [doc(i) for i in range(20)] + [
        make_doc(f"{P}/Lysozyme-{i}.nxs", entries=(entry(title=f"Run {i} HEWL"),)) for i in range(3)
    ]
    operations: list[dict[str, object]] = []
    for d in docs:
        source = {k: v for k, v in doc_source(d).items() if k not in new_fields}
        operations += [{"index": {"_id": d.id}}, source]
    assert not client.bulk(index=alias, operations=operations, refresh=True)["errors"]
    url = es_node.store_url(prefix)
    with pytest.raises(SchemaOutdated, match="version 2 and this catalogd uses version 3"):
        ElasticsearchStore.from_url(url)  # no search runs on the old fields
    with ElasticsearchStore.from_url(url, check_version=False) as store:
        result = reindex(store)
    assert (result.source, result.target, result.copied) == (
        versioned(alias, 2), versioned(alias, 3), 23
    )  # fmt: skip
    with ElasticsearchStore.from_url(url) as store:
        assert store.index_version() == (versioned(alias, 3), 3)
        assert store.search(SearchQuery(text="scan000")).total == 20
        assert {d.name for d in store.search(SearchQuery(text="ZYME-1 hewl")).items} == {
            "Lysozyme-1.nxs"
        }
    by_suffix = client.count(index=alias, query={"prefix": {"search_suffixes": "zyme-"}})
    assert by_suffix["count"] == 3  # the new field holds the reindexed documents' text


def shape(client: Elasticsearch, index: str) -> tuple[str, str, str]:
    """(number_of_shards, number_of_replicas, auto_expand_replicas) of ``index``."""
    found = client.indices.get_settings(index=index, include_defaults=True)[index]
    both = {**found["defaults"]["index"], **found["settings"]["index"]}
    return both["number_of_shards"], both["number_of_replicas"], both["auto_expand_replicas"]


def test_a_new_index_gets_the_configured_shards_and_replicas(
    es_node: Node, prefix: str, client: Elasticsearch
) -> None:
    url = es_node.store_url(prefix)
    with ElasticsearchStore.from_url(url, shards=3, replicas=0) as store:
        (index,) = behind_alias(client, store.files_alias)
        assert shape(client, index) == ("3", "0", "false")
        store.put([doc(i) for i in range(50)])
        store.flush()
        assert store.search(SearchQuery(text="scan0004", size=0)).total == 10  # all shards
        store.record_audit([], scope=P, seen_at=1.0)  # makes the violations index
        (violations,) = client.indices.get_alias(name=f"{prefix}-violations").body
        assert shape(client, violations) == ("1", "0", "false")  # one shard, the replicas
    with pytest.raises(StoreError, match="shards must be between 1 and 1024"):
        ElasticsearchStore.from_url(url, shards=0)
    with pytest.raises(StoreError, match="replicas must be 0 or more"):
        ElasticsearchStore.from_url(url, replicas=-1)


def test_by_default_one_shard_and_a_replica_wherever_there_is_a_second_node(
    es: ElasticsearchStore, client: Elasticsearch
) -> None:
    (index,) = behind_alias(client, es.files_alias)
    assert shape(client, index) == ("1", "0", "0-1")  # one node here: no replica yet


def test_reindex_applies_the_configured_shards_and_replicas(
    es: ElasticsearchStore, es_node: Node, prefix: str, client: Elasticsearch, tmp_path: Path
) -> None:
    old = filled(es, client, 30)
    url = es_node.store_url(prefix)
    bad = run_cli(tmp_path, "reindex", "--store", url, config="[store]\nshards = 0\n")
    assert bad.returncode == 78 and "store.shards" in bad.stderr
    assert behind_alias(client, es.files_alias) == [old]  # nothing done
    config = "[store]\nshards = 2\nreplicas = 0\n"
    done = run_cli(tmp_path, "reindex", "--store", url, config=config)
    assert done.returncode == 0, done.stderr
    (new,) = behind_alias(client, es.files_alias)
    assert new != old and shape(client, new) == ("2", "0", "false")
    assert es.search(SearchQuery(text="SCAN0002", size=0)).total == 10
    # A command creating the catalogue follows the configuration as well.
    fresh = f"{prefix}-fresh"
    try:
        made = run_cli(tmp_path, "search", "--store", es_node.store_url(fresh), config=config)
        assert made.returncode == 0, made.stderr
        (created,) = behind_alias(client, f"{fresh}-files")
        assert shape(client, created) == ("2", "0", "false")
    finally:
        es_node.drop(fresh)


def test_an_index_without_a_version_is_version_one(
    es: ElasticsearchStore, client: Elasticsearch
) -> None:
    (index,) = behind_alias(client, es.files_alias)
    assert es.index_version() == (index, SCHEMA_VERSION)
    client.indices.put_mapping(index=index, meta={})
    assert es.index_version() == (index, 1)


def test_a_failed_reindex_leaves_the_catalogue_as_it_was(
    es: ElasticsearchStore, client: Elasticsearch, monkeypatch: pytest.MonkeyPatch
) -> None:
    es.put([doc(i) for i in range(100)])
    es.flush()
    before = behind_alias(client, es.files_alias)

    def broken(self: es_reindex.Reindexer, source: str, target: str) -> int:
        raise StoreError("the id walk failed")

    monkeypatch.setattr(es_reindex.Reindexer, "_remove_deleted", broken)
    with pytest.raises(StoreError, match="id walk"):
        reindex(es)
    assert behind_alias(client, es.files_alias) == before
    indices = client.indices.get(index=f"{es.files_alias}-v*").body
    assert sorted(indices) == before  # the half-built index is gone
    es.put([doc(500)])  # not left write-blocked
    es.flush()
    assert es.count() == 101


def test_reindex_needs_an_elasticsearch_store(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "reindex", "--store", f"sqlite:///{tmp_path}/c.db")
    assert done.returncode == 2 and "Elasticsearch" in done.stderr


# -- the reads a reindex (and the daemon) rely on -------------------------------------------
def test_iter_documents_reads_one_snapshot_under_concurrent_writes(
    es: ElasticsearchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(es_module, "ITER_PAGE", 100)
    es.put([doc(i) for i in range(1000, 1600)])
    es.flush()
    names: list[str] = []
    for d in es.iter_documents():
        names.append(d.name)
        if len(names) == 150:  # mid-way: add before and after the cursor, delete ahead
            es.put([doc(5), doc(9999), doc(1400, size=7)])
            es.delete([doc(1500).id, doc(1501).id])
            es.flush()
    assert names == [f"scan{i:05d}.h5" for i in range(1000, 1600)]
    assert {d.name for d in es.iter_documents()} >= {"scan00005.h5", "scan09999.h5"}


def test_get_is_real_time_and_checks_access(es: ElasticsearchStore, client: Elasticsearch) -> None:
    client.indices.put_settings(index=es.files_alias, settings={"refresh_interval": "-1"})
    d = doc(1)
    es.put([d])
    assert es.search(SearchQuery()).total == 0  # not refreshed yet
    assert es.get(d.id) == d  # yet the daemon sees its own write
    assert es.get(d.id, groups=frozenset({"20170251-group", "other"})) == d
    assert es.get(d.id, groups=frozenset({"20170252-group"})) is None
    assert es.get(d.id, groups=frozenset()) is None
    assert es.get("no-such-id") is None
    es.delete([d.id])
    assert es.get(d.id) is None
