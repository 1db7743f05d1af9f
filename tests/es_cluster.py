"""A real three-node Elasticsearch cluster on loopback, for the tests that need more than
one node (tests/test_es_cluster.py).

Each node is started by ``scripts/elasticsearch.sh`` like the shared single node of
tests/es_node.py (same distribution, same unprivileged user), in cluster mode: its own
HTTP and transport ports, the three transport ports as seed hosts and the three node
names as the initial masters, a small heap (``HEAP``; the machine has 2 cores and
24 GiB shared by everything else). The nodes are started at once, since none answers
before a majority of the masters has joined. A node can be killed (SIGKILL: the
process dies, its data stays) and started again on the same ports with the same data.

A cluster that cannot be formed fails the tests that need it: they are never skipped.
"""

from __future__ import annotations

import itertools
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from es_node import STOP_TIMEOUT_S, Node
from ops_daemon import free_port
from session_resource import SessionResource

#: Heap per node: three nodes of 384 MiB hold the tests' indices with room to spare.
HEAP = "384m"
SIZE = 3
#: How long the cluster may take to report a wanted health.
HEALTH_TIMEOUT_S = 180.0


class ClusterNode(Node):
    """One node of the cluster: started by :meth:`start`, not on construction."""

    def __init__(
        self, name: str, http_port: int, transport_port: int, seeds: str, masters: str
    ) -> None:
        self.name = name
        self.version = None  # scripts/elasticsearch.sh's default
        self.run_dir = tempfile.mkdtemp(prefix=f"catalogd-es-{name}-")
        self.url = f"http://127.0.0.1:{http_port}"
        self._names = itertools.count()
        self._env = {
            "CATALOGD_ES_PORT": str(http_port),
            "CATALOGD_ES_TRANSPORT_PORT": str(transport_port),
            "CATALOGD_ES_NODE_NAME": name,
            "CATALOGD_ES_CLUSTER": f"catalogd-cluster-{os.getpid()}",
            "CATALOGD_ES_SEED_HOSTS": seeds,
            "CATALOGD_ES_MASTERS": masters,
            "CATALOGD_ES_HEAP": HEAP,
        }

    def start(self) -> None:
        url = self._start(self._env)
        assert url == self.url, (url, self.url)

    def resume(self) -> None:
        self.start()

    def kill(self) -> None:
        """SIGKILL the node's process (a crash: no shutdown, data kept) and wait for it."""
        pid_file = Path(self.run_dir, "es.pid")
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)
            raise RuntimeError(f"{self.name} (pid {pid}) did not die")
        finally:
            pid_file.unlink(missing_ok=True)


class Cluster:
    """Three nodes forming one cluster; ``url`` names them all, as ``store.url`` does."""

    def __init__(self) -> None:
        transport = [free_port() for _ in range(SIZE)]
        names = [f"node-{i}" for i in range(SIZE)]
        seeds = ",".join(f"127.0.0.1:{port}" for port in transport)
        self.nodes = [
            ClusterNode(name, free_port(), port, seeds, ",".join(names))
            for name, port in zip(names, transport, strict=True)
        ]
        self.url = ",".join(node.url for node in self.nodes)
        self._names = itertools.count()
        try:
            self.start_nodes(self.nodes)
            self.wait_for(status="green", nodes=SIZE)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def start_nodes(nodes: list[ClusterNode]) -> None:
        """Start ``nodes`` at once (a node that needs the others to elect a master
        would wait for them); raises the first failure."""
        with ThreadPoolExecutor(len(nodes)) as pool:
            for started in [pool.submit(node.start) for node in nodes]:
                started.result()

    def client(self) -> Elasticsearch:
        """A client of every node (closed by the caller)."""
        return Elasticsearch([node.url for node in self.nodes], max_retries=SIZE)

    def health(self, **params: Any) -> dict[str, Any]:
        with self.client() as client:
            return dict(client.cluster.health(**params))

    def wait_for(
        self,
        *,
        status: str,
        nodes: int,
        index: str | None = None,
        timeout: float = HEALTH_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Wait until the cluster reports ``status`` (or better) with ``nodes`` nodes."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.health(
                    index=index,
                    wait_for_status=status,
                    wait_for_nodes=str(nodes),
                    wait_for_no_relocating_shards=True,
                    timeout="5s",
                )
            except Exception as exc:  # a node answering before the cluster has formed
                last = {"error": repr(exc)}
                time.sleep(0.5)
                continue
            if not last.get("timed_out"):
                return last
        raise RuntimeError(f"the cluster did not become {status} with {nodes} nodes: {last}")

    def unique_prefix(self) -> str:
        return f"cluster-{os.getpid()}-{next(self._names)}"

    def store_url(self, prefix: str) -> str:
        return f"{self.url}?index={prefix}"

    def node_named(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def shards(self, index: str) -> list[dict[str, Any]]:
        """``_cat/shards`` of ``index``: each copy's ``prirep`` (p or r), ``node``, ``state``."""
        with self.client() as client:
            found = client.cat.shards(index=index, format="json", h="shard,prirep,node,state")
        assert isinstance(found.body, list), found.body
        return [dict(row) for row in found.body]

    def primary_node(self, index: str) -> ClusterNode:
        """The node holding the primary of ``index``'s shard 0 (the index has one shard)."""
        shards = self.shards(index)
        for shard in shards:
            if shard["prirep"] == "p" and shard["state"] == "STARTED":
                return self.node_named(shard["node"])
        raise AssertionError(f"no started primary of {index}: {shards}")

    def drop(self, prefix: str) -> None:
        with self.client() as client:
            indices = list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all"))
            if indices:
                client.indices.delete(index=",".join(indices))
            templates = client.indices.get_index_template(name="*")["index_templates"]
            for template in templates:
                if template["name"].startswith(prefix):
                    client.indices.delete_index_template(name=template["name"])

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))


_shared = SessionResource(Cluster)
#: The session's cluster, formed on first use (and stopped at exit at the latest).
shared_cluster = _shared.get
stop_shared_cluster = _shared.stop


@pytest.fixture(scope="session")
def es_cluster() -> Iterator[Cluster]:
    """The running three-node cluster; a failure to form it is a test failure."""
    try:
        yield shared_cluster()
    finally:
        stop_shared_cluster()


@pytest.fixture
def healthy_cluster(es_cluster: Cluster) -> Cluster:
    """The cluster with all three nodes up and every shard assigned (tests that kill
    nodes bring them back; this checks it before the next test starts)."""
    down = [node for node in es_cluster.nodes if not Path(node.run_dir, "es.pid").exists()]
    if down:
        es_cluster.start_nodes(down)
    es_cluster.wait_for(status="green", nodes=SIZE)
    return es_cluster


@pytest.fixture
def cluster_prefix(healthy_cluster: Cluster) -> Iterator[str]:
    name = healthy_cluster.unique_prefix()
    try:
        yield name
    finally:
        healthy_cluster.drop(name)
