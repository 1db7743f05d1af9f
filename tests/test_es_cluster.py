"""The Elasticsearch store on a real three-node cluster (tests/es_cluster.py).

- the index gets one replica, on another node than its primary;
- writes (through the spool, as ``catalogd run`` makes them) and searches (a plain store,
  as ``catalogd serve`` makes them) go on while the node holding the primary is killed
  and comes back: nothing is lost, nothing is duplicated, and every search answers,
  because the store's client, given every node's URL, fails over to the others;
- while the cluster is red (two of three nodes killed: no master, no copy of the shard),
  the spool keeps the writes and replays them once the nodes are back;
- the store contract suite (tests/test_store_contract.py) passes on the cluster too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_store_contract as contract
from es_cluster import Cluster, cluster_prefix, es_cluster, healthy_cluster
from ops_daemon import wait_for
from test_store_contract import make_doc

from catalogd.document import FileDocument
from catalogd.errors import StoreError
from catalogd.store import open_spooled_store
from catalogd.store import spool as spool_module
from catalogd.store.base import SearchQuery, Store
from catalogd.store.elasticsearch import ElasticsearchStore

__all__ = ["cluster_prefix", "es_cluster", "healthy_cluster"]  # fixtures used below

pytestmark = pytest.mark.slow

P = "/data/visitor/biomax/20170251/2017112208/raw"
BATCH = 20


@pytest.fixture
def fast_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay the spool every 0.2 s at most, not at the production backoff."""
    monkeypatch.setattr(spool_module, "REPLAY_BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr(spool_module, "REPLAY_BACKOFF_S", 0.05)


def doc(n: int) -> FileDocument:
    return make_doc(f"{P}/scan_{n:06d}.nxs", size=1000 + n)


def spooled(cluster: Cluster, prefix: str, tmp_path: Path) -> Store:
    return open_spooled_store(
        cluster.store_url(prefix), spool_dir=str(tmp_path / "spool"), name="run"
    )


def drained(store: Store) -> bool:
    return store.health().get("state") == "ok"


def stored_paths(cluster: Cluster, prefix: str) -> list[str]:
    """Every stored document's path, one per document (duplicates would show twice)."""
    with ElasticsearchStore.from_url(cluster.store_url(prefix)) as reader:
        reader.flush()
        return [d.path for d in reader.iter_documents()]


def test_the_index_has_one_replica_on_another_node(
    healthy_cluster: Cluster, cluster_prefix: str
) -> None:
    with ElasticsearchStore.from_url(healthy_cluster.store_url(cluster_prefix)) as store:
        store.put([doc(1)])
        store.flush()
        alias = store.files_alias
    healthy_cluster.wait_for(status="green", nodes=3, index=alias)
    shards = healthy_cluster.shards(alias)
    assert sorted(s["prirep"] for s in shards) == ["p", "r"]
    assert all(s["state"] == "STARTED" for s in shards)
    assert len({s["node"] for s in shards}) == 2


class Traffic:
    """A writer (batches of new documents, and deletes of some, through ``writer``) and a
    searcher (``searcher``) running until :meth:`stop`; what each saw is kept."""

    def __init__(self, writer: Store, searcher: Store) -> None:
        self.writer = writer
        self.searcher = searcher
        self.written: set[str] = set()
        self.deleted: set[str] = set()
        self.searches = 0
        self.search_errors: list[str] = []
        self.write_errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, name="cluster-writer"),
            threading.Thread(target=self._search, name="cluster-searcher"),
        ]
        for thread in self._threads:
            thread.start()

    def _write(self) -> None:
        n = 0
        while not self._stop.is_set():
            batch = [doc(i) for i in range(n, n + BATCH)]
            n += BATCH
            try:
                self.writer.put(batch)
                self.written.update(d.path for d in batch)
                gone = batch[0]  # one of each batch is deleted again
                self.writer.delete([gone.id])
                self.deleted.add(gone.path)
            except StoreError as exc:
                self.write_errors.append(str(exc))
            time.sleep(0.05)

    def _search(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.searcher.search(SearchQuery(text="scan", size=5))
                assert result.total >= 0
                self.searches += 1
            except StoreError as exc:
                self.search_errors.append(f"{time.strftime('%T')}: {exc}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


@pytest.fixture
def stores(
    healthy_cluster: Cluster, cluster_prefix: str, tmp_path: Path
) -> Iterator[tuple[Store, Store]]:
    writer = spooled(healthy_cluster, cluster_prefix, tmp_path)
    searcher = ElasticsearchStore.from_url(healthy_cluster.store_url(cluster_prefix))
    try:
        yield writer, searcher
    finally:
        writer.close()
        searcher.close()


def test_writes_and_searches_go_on_while_a_node_is_killed_and_comes_back(
    healthy_cluster: Cluster,
    cluster_prefix: str,
    stores: tuple[Store, Store],
    fast_replay: None,
) -> None:
    writer, searcher = stores
    writer.put([doc(999_999)])
    writer.flush()
    victim = healthy_cluster.primary_node(f"{cluster_prefix}-files")
    traffic = Traffic(writer, searcher)
    try:
        wait_for(lambda: traffic.searches >= 20 and len(traffic.written) >= 100, "traffic")
        victim.kill()
        killed_at = traffic.searches, len(traffic.written)
        # The cluster elects a new master if need be and promotes the replica.
        healthy_cluster.wait_for(status="yellow", nodes=2)
        wait_for(
            lambda: (
                traffic.searches >= killed_at[0] + 50 and len(traffic.written) >= killed_at[1] + 200
            ),
            "traffic with a node down",
        )
        victim.resume()
        healthy_cluster.wait_for(status="green", nodes=3)
        back_at = traffic.searches, len(traffic.written)
        wait_for(
            lambda: (
                traffic.searches >= back_at[0] + 20 and len(traffic.written) >= back_at[1] + 100
            ),
            "traffic with the node back",
        )
    finally:
        traffic.stop()
    assert traffic.search_errors == []
    assert traffic.write_errors == []
    wait_for(lambda: drained(writer), "the spool to drain")
    writer.flush()
    paths = stored_paths(healthy_cluster, cluster_prefix)
    expected = (traffic.written - traffic.deleted) | {doc(999_999).path}
    assert len(paths) == len(set(paths)), "a document was stored twice"
    assert set(paths) == expected
    assert searcher.count() == len(expected)


def test_the_spool_covers_the_time_the_cluster_is_red(
    healthy_cluster: Cluster,
    cluster_prefix: str,
    stores: tuple[Store, Store],
    fast_replay: None,
) -> None:
    writer, searcher = stores
    before = [doc(i) for i in range(50)]
    writer.put(before)
    writer.flush()
    alias = f"{cluster_prefix}-files"
    healthy_cluster.wait_for(status="green", nodes=3, index=alias)
    holders = {s["node"] for s in healthy_cluster.shards(alias)}
    down = [healthy_cluster.node_named(name) for name in sorted(holders)]
    assert len(down) == 2
    for node in down:
        node.kill()
    # Red and masterless: no copy of the shard is left, and one node cannot elect.
    during = [doc(i) for i in range(50, 120)]
    writer.put(during)
    writer.delete([d.id for d in before[:10]])
    health = writer.health()
    assert health["state"] == "degraded" and health["spooled"] >= 2, health
    with pytest.raises(StoreError):
        searcher.search(SearchQuery(text="scan"))
    Cluster.start_nodes(down)
    healthy_cluster.wait_for(status="green", nodes=3, index=alias)
    wait_for(lambda: drained(writer), "the spool to drain")
    writer.flush()
    paths = stored_paths(healthy_cluster, cluster_prefix)
    assert len(paths) == len(set(paths))
    assert set(paths) == {d.path for d in before[10:] + during}
    assert searcher.search(SearchQuery(text="scan_000115")).total == 1


# -- the store contract, on the cluster ------------------------------------------------------
@pytest.fixture
def store(healthy_cluster: Cluster) -> Iterator[Store]:
    """The contract suite's ``store``, on the cluster, under a prefix of its own."""
    prefix = healthy_cluster.unique_prefix()
    opened = ElasticsearchStore.from_url(healthy_cluster.store_url(prefix))
    try:
        yield opened
    finally:
        opened.close()
        healthy_cluster.drop(prefix)


globals().update(contract.contract_tests("on_the_cluster"))
