"""Writes during an Elasticsearch outage: the durable spool, its replay, and the daemon
across an outage and a SIGKILL, against real nodes.

An outage is made two ways: a TCP gate between catalogd and the shared node that refuses
connections and drops the open ones (the network fails), and, for the daemon, a node of
the test's own that is halted and started again (the cluster fails).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from elasticsearch import Elasticsearch
from es_node import Node, es_node, prefix, throwaway_node
from ops_daemon import CATALOGD, CatalogdProcess, wait_for, write_nexus
from reliability import spooled
from test_store_contract import make_doc

from catalogd.document import FileDocument, document_id
from catalogd.errors import StoreError, StoreUnavailable
from catalogd.store import open_spooled_store
from catalogd.store import spool as spool_module
from catalogd.store.base import SearchQuery
from catalogd.store.elasticsearch import ElasticsearchStore
from catalogd.store.spool import Spool, SpoolError, SpoolingStore, spool_path
from catalogd.violations import Violation, ViolationState

__all__ = ["es_node", "prefix", "throwaway_node"]  # fixtures used below

P = "/data/visitor/biomax/20170251/2017112208/raw"


class Gate:
    """A TCP relay on a fixed loopback port to the node; ``cut()`` refuses new
    connections and drops open ones, ``restore()`` listens again on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                try:  # wakes the thread in accept(), which close() alone would not
                    self._listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def gate(es_node: Node) -> Iterator[Gate]:
    port = int(es_node.url.rsplit(":", 1)[1])
    opened = Gate(port)
    try:
        yield opened
    finally:
        opened.cut()


@pytest.fixture
def fast_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry every 0.1 s at most, so the tests do not wait for the production backoff."""
    monkeypatch.setattr(spool_module, "REPLAY_BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr(spool_module, "REPLAY_BACKOFF_S", 0.05)


def doc(name: str, size: int = 100) -> FileDocument:
    return make_doc(f"{P}/{name}", size=size)


def violation(name: str, rule: str = "DP009") -> Violation:
    return Violation(
        path=f"{P}/{name}",
        rule=rule,
        severity="error",
        expected="no o bits",
        actual="o+r",
        message="readable by others",
        proposal="20170251",
    )


def open_spooled(
    url: str, prefix: str, spool_dir: Path, local_reads: bool = False
) -> SpoolingStore:
    store = open_spooled_store(
        f"{url}?index={prefix}", spool_dir=str(spool_dir), name="test", local_reads=local_reads
    )
    assert isinstance(store, SpoolingStore)
    return store


def direct(es_node: Node, prefix: str) -> ElasticsearchStore:
    return ElasticsearchStore.from_url(es_node.store_url(prefix))


# -- the spool file -------------------------------------------------------------------------
def test_spool_keeps_order_across_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s" / "run.spool.sqlite")
    spool = Spool(path, target="http://es:9200?index=a")
    spool.append_puts([doc("a.h5", 1), doc("b.h5", 2)])
    spool.append_deletes([document_id(f"{P}/b.h5")])
    spool.append_audit([violation("a.h5")], scope=f"{P}/a.h5", seen_at=5.0, recursive=False)
    spool.append_puts([doc("a.h5", 3)])
    spool.close()  # as a crash would leave it: every append was committed

    again = Spool(path, target="http://es:9200?index=a")
    ops = again.head(100)
    assert [op.kind for op in ops] == ["put", "put", "delete", "audit", "put"]
    assert [op.seq for op in ops] == sorted(op.seq for op in ops)
    assert len(again) == 5
    latest = again.latest(document_id(f"{P}/a.h5"))
    assert latest is not None and latest.kind == "put"
    assert spool_module.decode_doc(latest.body or "").size == 3
    deleted = again.latest(document_id(f"{P}/b.h5"))
    assert deleted is not None and deleted.kind == "delete"
    again.remove_through(ops[1].seq)
    assert [op.kind for op in again.head(100)] == ["delete", "audit", "put"]
    again.close()
    assert len(Spool(path, target="http://es:9200?index=a")) == 3


def test_a_document_survives_the_spool_exactly(tmp_path: Path) -> None:
    odd = make_doc(
        os.fsdecode(f"{P}/caf\xe9-".encode() + b"\xff.h5"),
        entries=({"name": "entry", "title": "lysozyme \u00e9", "users": [{"name": "A"}]},),
    )
    spool = Spool(str(tmp_path / "s.sqlite"), target="t")
    spool.append_puts([odd])
    (op,) = spool.head(1)
    assert spool_module.decode_doc(op.body or "") == odd


def test_a_spool_is_used_by_one_process(tmp_path: Path) -> None:
    path = str(tmp_path / "run.spool.sqlite")
    first = Spool(path, target="t")
    with pytest.raises(SpoolError, match="in use by another catalogd"):
        Spool(path, target="t")
    first.close()
    Spool(path, target="t").close()


def test_a_corrupt_spool_is_an_error_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "run.spool.sqlite"
    garbage = b"not a database, but maybe someone's writes " * 100
    path.write_bytes(garbage)
    with pytest.raises(SpoolError, match=f"{path}.*cannot be used.*move it aside") as caught:
        Spool(str(path), target="t")
    assert caught.value.exit_code == 78
    assert path.read_bytes() == garbage


def test_an_unwritable_spool_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match="cannot create the write spool"):
        Spool(str(tmp_path / "file" / "spool" / "run.spool.sqlite"), target="t")


def test_a_spool_for_another_catalogue_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "run.spool.sqlite")
    spool = Spool(path, target="http://old:9200?index=a")
    spool.append_deletes(["x"])
    spool.close()
    with pytest.raises(SpoolError, match="holds 1 writes for http://old:9200"):
        Spool(path, target="http://new:9200?index=a")
    spool = Spool(path, target="http://old:9200?index=a")
    spool.remove_through(10)
    spool.close()
    Spool(path, target="http://new:9200?index=a").close()  # empty: free to move


# -- the spooling store against a real node ---------------------------------------------------
def test_writes_in_an_outage_are_spooled_and_replayed_in_order(
    es_node: Node, prefix: str, gate: Gate, tmp_path: Path, fast_replay: None
) -> None:
    store = open_spooled(gate.url, prefix, tmp_path, local_reads=True)
    try:
        store.put([doc("a.h5", 1), doc("b.h5", 1)])
        store.flush()
        assert store.health() == {"state": "ok"}
        assert store.count() == 2

        gate.cut()
        store.put([doc("a.h5", 2)])
        store.delete([document_id(f"{P}/b.h5")])
        store.put([doc("c.h5", 1)])
        store.record_audit([violation("c.h5")], scope=f"{P}/c.h5", seen_at=7.0, recursive=False)
        store.put([doc("a.h5", 3)])
        store.flush()  # durable in the spool; does not raise while the cluster is down

        health = store.health()
        assert health["state"] == "degraded" and health["spooled"] >= 5
        assert health["oldest_age_s"] >= 0.0 and str(gate.port) in health["error"]
        with pytest.raises(StoreUnavailable):
            store.search(SearchQuery(text="a.h5"))
        with pytest.raises(StoreUnavailable):
            store.get(document_id(f"{P}/a.h5"), groups=frozenset({"20170251-group"}))
        seen = store.get(document_id(f"{P}/a.h5"))  # the daemon's own view: the spool
        assert seen is not None and seen.size == 3
        assert store.get(document_id(f"{P}/b.h5")) is None
        with direct(es_node, prefix) as es:  # nothing reached the cluster
            assert es.get(document_id(f"{P}/a.h5")).size == 1  # type: ignore[union-attr]

        gate.restore()
        wait_for(lambda: store.health() == {"state": "ok"}, "the replay")
        store.flush()
        with direct(es_node, prefix) as es:
            sizes = {d.name: d.size for d in es.iter_documents()}
            assert sizes == {"a.h5": 3, "c.h5": 1}
            (found,) = es.violations()
            assert (found.path, found.first_seen) == (f"{P}/c.h5", 7.0)
        assert len(store.spool) == 0
    finally:
        store.close()


def test_the_spool_survives_a_restart_and_is_replayed_by_the_next_process(
    es_node: Node, prefix: str, gate: Gate, tmp_path: Path, fast_replay: None
) -> None:
    gate.cut()
    store = open_spooled(gate.url, prefix, tmp_path)  # opens although unreachable
    assert store.health()["state"] == "degraded"
    store.put([doc(f"f{i}.h5", i) for i in range(50)])
    store.delete([document_id(f"{P}/f7.h5")])
    store.close()  # the cluster is still down: the writes stay on disk
    left = Spool(spool_path(str(tmp_path), "test"), target=f"{gate.url}?index={prefix}")
    assert len(left) == 51
    left.close()

    gate.restore()
    again = open_spooled(gate.url, prefix, tmp_path)
    try:
        wait_for(lambda: again.health() == {"state": "ok"}, "the replay")
        again.flush()
        names = {d.name for d in again.iter_documents()}
        assert names == {f"f{i}.h5" for i in range(50)} - {"f7.h5"}
    finally:
        again.close()


def test_a_crash_in_the_middle_of_a_replay_loses_and_reorders_nothing(
    es_node: Node, prefix: str, tmp_path: Path, fast_replay: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "REPLAY_BATCH", 3)
    writes: list[tuple[str, object]] = []
    for round_ in range(4):
        for i in range(5):
            writes.append(("put", doc(f"f{i}.h5", 10 * round_ + i)))
        writes.append(("delete", document_id(f"{P}/f{round_}.h5")))
    path = spool_path(str(tmp_path), "test")
    target = f"{es_node.url}?index={prefix}"
    spool = Spool(path, target=target)
    for kind, value in writes:
        if kind == "put":
            assert isinstance(value, FileDocument)
            spool.append_puts([value])
        else:
            assert isinstance(value, str)
            spool.append_deletes([value])
    # The process died after applying the first 13 writes and before forgetting them.
    with direct(es_node, prefix) as es:
        SpoolingStore._apply(es, spool.head(13))
        es.flush()
    spool.close()

    store = open_spooled(es_node.url, prefix, tmp_path)
    try:
        wait_for(lambda: store.health() == {"state": "ok"}, "the replay")
        store.flush()
        got = {d.name: d.size for d in store.iter_documents()}
    finally:
        store.close()
    expected: dict[str, int] = {}  # the writes applied once, in order
    for _kind, value in writes:
        if isinstance(value, FileDocument):
            expected[value.name] = value.size
        else:
            expected = {n: s for n, s in expected.items() if document_id(f"{P}/{n}") != value}
    assert got == expected


def test_a_write_the_cluster_refuses_is_kept_as_rejected_not_lost(
    es_node: Node, prefix: str, gate: Gate, tmp_path: Path, fast_replay: None
) -> None:
    store = open_spooled(gate.url, prefix, tmp_path)
    try:
        store.put([doc("first.h5")])
        gate.cut()
        huge = doc("x" * 40_000 + ".h5")  # a keyword past Lucene's 32766-byte term limit
        store.put([doc("before.h5"), huge, doc("after.h5")])
        gate.restore()
        wait_for(lambda: store.health().get("rejected") == 1, "the rejection")
        wait_for(lambda: store.health()["state"] == "ok", "the rest of the replay")
        store.flush()
        assert {d.name for d in store.iter_documents()} == {"first.h5", "before.h5", "after.h5"}
    finally:
        store.close()
    db = sqlite3.connect(spool_path(str(tmp_path), "test"))
    ((doc_id, error),) = db.execute("SELECT doc_id, error FROM rejected").fetchall()
    assert doc_id == huge.id and "longer than maximum" in error


def test_reads_during_an_outage_fail_fast(
    es_node: Node, prefix: str, gate: Gate, tmp_path: Path, fast_replay: None
) -> None:
    store = open_spooled(gate.url, prefix, tmp_path)
    try:
        gate.cut()
        with pytest.raises(StoreUnavailable):
            store.count()
        started = time.monotonic()
        for _ in range(20):
            with pytest.raises(StoreUnavailable, match="unreachable"):
                list(store.iter_documents())
        assert time.monotonic() - started < 2.0
        with pytest.raises(StoreUnavailable):  # not the daemon: auditors must not see []
            store.violations(state=ViolationState.ALL)
        gate.restore()
        wait_for(lambda: store.health() == {"state": "ok"}, "the probe")
        assert store.count() == 0
    finally:
        store.close()


def test_an_outage_is_logged_once_in_catalogds_words(
    es_node: Node, prefix: str, gate: Gate, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate.cut()
    with caplog.at_level(logging.DEBUG):
        store = open_spooled(gate.url, prefix, tmp_path)
        for i in range(5):
            store.put([doc(f"f{i}.h5")])
        store.close()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert {r.name for r in loud} == {"catalogd.store.spool"}
    assert sum("unreachable" in r.getMessage() for r in loud) == 1


def test_a_closed_spooling_store_refuses_writes(es_node: Node, prefix: str, tmp_path: Path) -> None:
    store = open_spooled(es_node.url, prefix, tmp_path)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.put([doc("a.h5")])


# -- the daemon across an outage and a SIGKILL --------------------------------------------------


def write_whole(path: Path, title: str) -> None:
    """A NeXus file that appears complete (written aside, then renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    write_nexus(tmp, title)
    os.replace(tmp, path)


class Daemon(CatalogdProcess):
    """``catalogd run`` as a process, writing to the node through a spool."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.state = tmp / "state"
        self.log = tmp / f"daemon-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
        env.update(
            CATALOGD_CONFIG=str(tmp / "none.toml"),
            CATALOGD_DAEMON_QUIET_PERIOD_S="0.2",
            CATALOGD_DAEMON_EXTRACT_WORKERS="1",
            CATALOGD_DAEMON_STATE_DIR=str(self.state),
            CATALOGD_DAEMON_RECONCILE_INTERVAL_S="3",
            CATALOGD_STORE_SPOOL_DIR=str(tmp / "spool"),
            CATALOGD_DAEMON_LISTEN="",
        )
        (tmp / "none.toml").write_text("")
        args = [*CATALOGD, "-v", "run", "--root", str(tmp / "data"), "--store", url]
        self.launch(args, env, reconciled=False)


@pytest.mark.slow
def test_the_daemon_loses_nothing_across_an_outage_and_a_kill(
    throwaway_node: Node, tmp_path: Path
) -> None:
    node = throwaway_node
    url = node.store_url("outage")
    raw = tmp_path / "data" / "visitor" / "biomax" / "20170251" / "2017112208" / "raw"
    raw.mkdir(parents=True)
    latest: dict[str, str] = {}

    def write(name: str, title: str) -> None:
        write_whole(raw / name, title)
        latest[name] = title

    daemon = Daemon(tmp_path, url)
    try:
        for i in range(20):
            write(f"scan{i:03d}.nxs", f"before {i}")
        wait_for(lambda: found_titles(node) == latest, "the first files in the catalogue")

        stopper = threading.Thread(target=node.halt)
        stopper.start()  # Elasticsearch goes away while files keep coming
        for i in range(20, 40):
            write(f"scan{i:03d}.nxs", f"during {i}")
            time.sleep(0.05)
        stopper.join()
        for i in range(0, 40, 4):
            write(f"scan{i:03d}.nxs", f"rewritten during the outage {i}")
        wait_for(lambda: daemon.status().get("pid") is not None, "the daemon")
        spool = tmp_path / "spool" / "run.spool.sqlite"
        wait_for(lambda: spooled(spool) > 0, "writes in the spool")
        wait_for(lambda: daemon.store_health().get("spooled", 0) > 0, "status.json: degraded")
        health = daemon.store_health()
        assert health["state"] == "degraded" and str(urlsplit(url).port) in health["error"]

        time.sleep(1.0)  # let the daemon take in what it saw, then kill it mid-outage
        daemon.kill()
        for i in range(40, 50):
            write(f"scan{i:03d}.nxs", f"while the daemon was dead {i}")
        write("scan001.nxs", "rewritten while the daemon was dead")
        daemon = Daemon(tmp_path, url)  # starts during the outage, finds the spool
        for i in range(50, 60):
            write(f"scan{i:03d}.nxs", f"after the restart {i}")
        wait_for(lambda: spooled(spool) > 0, "the restarted daemon spooling")

        node.resume()
        wait_for(lambda: found_titles(node) == latest, "every file, once, as last written", 120)
        wait_for(lambda: spooled(spool) == 0, "an empty spool")
        wait_for(lambda: daemon.store_health() == {"state": "ok"}, "status.json: ok again")
        with Elasticsearch(node.url) as client:
            client.indices.refresh(index="outage-files")
            assert client.count(index="outage-files")["count"] == len(latest) == 60
    finally:
        daemon.kill()


def found_titles(node: Node) -> dict[str, str]:
    """File name -> title, of every document in the node's catalogue (unreachable: {})."""
    try:
        with ElasticsearchStore.from_url(node.store_url("outage")) as es:
            es.flush()
            titles: dict[str, str] = {}
            for d in es.iter_documents():
                assert d.name not in titles, f"{d.name} is in the catalogue twice"
                titles[d.name] = d.title or ""
            return titles
    except StoreUnavailable:
        return {}


# -- catalogd scan ------------------------------------------------------------------------------
def scan(root: Path, url: str, spool_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOGD_")}
    (root.parent / "empty.toml").write_text("")
    env.update(
        CATALOGD_CONFIG=str(root.parent / "empty.toml"),
        CATALOGD_STORE_SPOOL_DIR=str(spool_dir),
    )
    return subprocess.run(
        [*CATALOGD, "scan", str(root), "--store", url, "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_a_scan_in_an_outage_keeps_its_writes_for_the_next_scan(
    es_node: Node, prefix: str, gate: Gate, tmp_path: Path
) -> None:
    raw = tmp_path / "data" / "visitor" / "biomax" / "20170251" / "2017112208" / "raw"
    raw.mkdir(parents=True)
    for i in range(30):
        (raw / f"f{i}.dat").write_bytes(b"x" * i)
    url = f"{gate.url}?index={prefix}"
    gate.cut()
    failed = scan(tmp_path / "data", url, tmp_path / "spool")
    assert failed.returncode == 69, failed.stderr
    assert "unreachable" in failed.stderr and "writes are kept in" in failed.stderr
    # the 30 documents and the pass's audit record (the scan polices: issue 13)
    assert spooled(tmp_path / "spool" / "scan.spool.sqlite") == 31

    gate.restore()
    (raw / "f0.dat").unlink()  # gone by the next scan: replayed, then removed
    done = scan(tmp_path / "data", url, tmp_path / "spool")
    assert done.returncode == 0, done.stderr
    assert spooled(tmp_path / "spool" / "scan.spool.sqlite") == 0
    with direct(es_node, prefix) as es:
        assert {d.name for d in es.iter_documents()} == {f"f{i}.dat" for i in range(1, 30)}


def test_a_scan_without_a_writable_spool_directory_still_scans(
    es_node: Node, prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.dat").write_text("a")
    (tmp_path / "file").write_text("")
    done = scan(tmp_path / "data", es_node.store_url(prefix), tmp_path / "file" / "spool")
    assert done.returncode == 0, done.stderr
    assert "writes are not spooled" in done.stderr
    with direct(es_node, prefix) as es:
        assert es.count() == 1
