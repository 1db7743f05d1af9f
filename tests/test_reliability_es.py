"""Elasticsearch going away under the real ``catalogd run``: a 60-second outage during a
burst, and the write spool's disk filling up while the catalogue is down.

Both run against a node of this module's own (tests/es_node.py ``Node``), halted and
resumed with its data, never the session's shared node. "In order" is observed on the
node itself: the index has one shard, so each document's ``_seq_no`` says when its last
write was applied; with one extraction worker the daemon writes documents in the order
it stamps ``indexed_at``, so the two orders must agree; and files rewritten or deleted
during the outage must end as last written (a replay out of order would resurrect an
old title or a deleted file).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest
from elasticsearch import Elasticsearch
from es_node import Node
from reliability import (
    DaemonProcess,
    Outcome,
    Recorder,
    spooled,
    sqlite_integrity,
    tmpfs,
    wait_for,
)

from catalogd.errors import StoreUnavailable
from catalogd.store.elasticsearch import ElasticsearchStore

#: An outage of a minute, and a node's restart, on a busy 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

VISIT = ("visitor", "id11", "p1", "20240101", "raw")
OUTAGE_S = 60.0
SPOOL_FILE = "run.spool.sqlite"

#: ``python -c WRITER DIR FIRST N PAUSE`` writes NeXus files scan_FIRST.. into DIR,
#: PAUSE seconds apart, each titled ``scan I``.
WRITER = """
import os, sys, time, h5py
d, first, n, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
os.makedirs(d, exist_ok=True)
for i in range(first, first + n):
    with h5py.File(os.path.join(d, "scan_%05d.nxs" % i), "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = "scan %d" % i
    time.sleep(pause)
"""


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    started = Node()
    try:
        yield started
    finally:
        started.stop()


def write(path: Path, title: str) -> None:
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = title


def catalogue(node: Node, prefix: str) -> dict[str, tuple[str, float, int]]:
    """path -> (title, indexed_at, _seq_no) of every document; {} while unreachable."""
    try:
        with ElasticsearchStore.from_url(node.store_url(prefix)) as es:
            es.flush()
            docs = {d.id: d for d in es.iter_documents()}
    except StoreUnavailable:
        return {}
    with Elasticsearch(node.url) as client:
        hits = client.search(
            index=f"{prefix}-files",
            size=10_000,
            seq_no_primary_term=True,
            source=False,
            query={"match_all": {}},
        )["hits"]["hits"]
    seq = {hit["_id"]: int(hit["_seq_no"]) for hit in hits}
    return {d.path: (d.title or "", d.indexed_at, seq.get(i, -1)) for i, d in docs.items()}


def on_disk(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*.nxs")):
        with h5py.File(path, "r") as f:
            found[str(path)] = f["entry/title"][()].decode()
    return found


def out_of_order(docs: dict[str, tuple[str, float, int]]) -> int:
    """Documents whose last write reached the node before an earlier-stamped one's."""
    by_seq = sorted(docs.values(), key=lambda d: d[2])
    return sum(1 for a, b in zip(by_seq, by_seq[1:], strict=False) if b[1] < a[1])


def test_elasticsearch_stopped_for_60_s_during_a_burst(
    node: Node, tmp_path: Path, reliability: Recorder
) -> None:
    prefix = node.unique_prefix()
    target = tmp_path.joinpath("data", *VISIT)
    target.mkdir(parents=True)
    env = {"CATALOGD_STORE_SPOOL_DIR": str(tmp_path / "spool")}
    daemon = DaemonProcess(tmp_path, url=node.store_url(prefix), env=env)
    n = 400
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), "0", str(n), "0.05"])
    try:
        wait_for(lambda: daemon.status().get("stored", 0) >= 50, "50 files stored", 120)
        halted_at = time.monotonic()
        stopper = threading.Thread(target=node.halt)
        stopper.start()
        stopper.join()
        wait_for(
            lambda: daemon.store_health().get("state") == "degraded", "the daemon to see it", 60
        )
        assert writer.wait(240) == 0
        # While it is down, files change and go: the replay must keep that order.
        for i in range(0, n, 10):
            write(target / f"scan_{i:05d}.nxs", f"rewritten {i}")
        for i in range(5, n, 50):
            (target / f"scan_{i:05d}.nxs").unlink()
        wait_for(lambda: daemon.idle(), "the daemon to take it all in", 120)
        spooled_at_peak = spooled(tmp_path / "spool" / SPOOL_FILE)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - halted_at)))
        outage_s = time.monotonic() - halted_at
        node.resume()
        resumed = time.monotonic()
        expected = on_disk(tmp_path / "data")

        def caught_up() -> bool:
            docs = catalogue(node, prefix)
            return {p: d[0] for p, d in docs.items()} == expected

        wait_for(caught_up, "the catalogue to match the disk", 180)
        recovered_s = time.monotonic() - resumed
        wait_for(lambda: daemon.store_health() == {"state": "ok"}, "status.json: ok again", 60)
        docs = catalogue(node, prefix)
    finally:
        writer.kill()
        writer.wait()
        assert daemon.terminate() == 0
    titles = {p: d[0] for p, d in docs.items()}
    reliability.record(
        Outcome(
            group="fault",
            name="Elasticsearch stopped during a burst",
            load=f"{n:,} NeXus files, {n // 10} rewritten and {len(range(5, n, 50))} deleted "
            "while it was down",
            fault=f"the node stopped for {outage_s:.0f} s ({spooled_at_peak} writes spooled)",
            expected=len(expected),
            indexed=sum(titles.get(p) == t for p, t in expected.items()),
            duplicated=0,  # ids are per path: a second copy cannot exist; stale ones count
            lost=len(set(expected) - set(titles)),
            recover_s=round(recovered_s, 1),
            details={
                "out_of_order": out_of_order(docs),
                "stale_or_resurrected": sum(titles.get(p) != t for p, t in expected.items())
                + len(set(titles) - set(expected)),
                "spooled_at_peak": spooled_at_peak,
            },
        )
    )
    assert spooled_at_peak > 0  # the outage really sent writes to the spool
    assert titles == expected
    assert out_of_order(docs) == 0
    assert spooled(tmp_path / "spool" / SPOOL_FILE) == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs for the spool: it fills after some dozens of documents."""
    with tmpfs(tmp_path / "spool", "1m") as mount:
        yield mount


def test_the_spool_disk_fills_up(
    node: Node, tmp_path: Path, small_disk: Path, reliability: Recorder
) -> None:
    prefix = node.unique_prefix()
    target = tmp_path.joinpath("data", *VISIT)
    target.mkdir(parents=True)
    env = {
        "CATALOGD_STORE_SPOOL_DIR": str(small_disk),
        "CATALOGD_DAEMON_RECONCILE_INTERVAL_S": "5",
    }
    daemon = DaemonProcess(tmp_path, url=node.store_url(prefix), env=env)
    n = 400
    spool = small_disk / SPOOL_FILE
    try:
        node.halt()
        subprocess.run(
            [sys.executable, "-c", WRITER, str(target), "0", str(n), "0"], check=True, timeout=240
        )

        def full() -> bool:
            return "full" in daemon.output().lower() or daemon.proc.poll() is not None

        wait_for(full, "the spool's disk to fill", 120)
        time.sleep(2.0)
        alive_when_full = daemon.proc.poll() is None
        exit_status = daemon.proc.returncode
        output = daemon.output()
        errors = [line for line in output.splitlines() if "full" in line and "spool" in line]
        integrity = sqlite_integrity(spool)
        kept = spooled(spool)
        # Space returns, then the node.
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        node.resume()
        resumed = time.monotonic()
        if daemon.proc.poll() is not None:
            # It stopped with its error and status 75 (EX_TEMPFAIL): systemd restarts
            # it (Restart=on-failure); here the test starts it again in its place.
            daemon = DaemonProcess(tmp_path, url=node.store_url(prefix), env=env)
        expected = on_disk(tmp_path / "data")

        def caught_up() -> bool:
            docs = catalogue(node, prefix)
            return {p: d[0] for p, d in docs.items()} == expected

        wait_for(caught_up, "every file in the catalogue", 180)
        recovered_s = time.monotonic() - resumed
        wait_for(lambda: daemon.store_health() == {"state": "ok"}, "status.json: ok again", 60)
    finally:
        if daemon.proc.poll() is None:
            daemon.terminate()
    docs = catalogue(node, prefix)
    reliability.record(
        Outcome(
            group="fault",
            name="the spool's disk full during an Elasticsearch outage",
            load=f"{n:,} NeXus files while the node was down",
            fault=f"ENOSPC on a 1 MiB spool file system after {kept} spooled writes",
            expected=len(expected),
            indexed=len(set(expected) & set(docs)),
            lost=len(set(expected) - set(docs)),
            recover_s=round(recovered_s, 1),
            details={
                "daemon_kept_running": alive_when_full,
                "exit_status": exit_status,
                "first_error": errors[0][:300] if errors else None,
                "spool_integrity_check": integrity,
            },
        )
    )
    assert errors, "no error said the spool was full"
    assert "Exception in thread" not in output  # no worker died of it
    if not alive_when_full:  # it stopped: with a non-zero status and the reason, last
        assert exit_status == 75  # EX_TEMPFAIL: systemd's Restart=on-failure brings it back
        assert "full" in output.strip().splitlines()[-1]
    assert integrity == "ok"
    assert {p: d[0] for p, d in docs.items()} == expected
