"""Faults a storage node sees, survived by the real ``catalogd run`` with the embedded
SQLite store: kill -9 mid-burst, an inotify queue overflow, SIGTERM mid-indexing.

Each test measures what was expected, indexed, extracted twice and lost, and records
it (tests/reliability.py) for docs/reliability.md. "Extracted twice" is observed two
ways: a document stored before the fault keeps its ``indexed_at`` (it was not stored
again), and the daemon's ``extracted`` counter after the restart equals the number of
files that were not yet in the catalogue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reliability import (
    DaemonProcess,
    Outcome,
    Recorder,
    alive,
    descendants,
    sqlite_integrity,
    tmpfs,
    wait_for,
)

from catalogd.document import FileDocument, document_id
from catalogd.errors import CatalogdError
from catalogd.store import open_store

VISIT = ("visitor", "id11", "p1", "20240101", "raw")

#: ``python -c NEXUS_WRITER DIR N`` writes N NeXus files ``scan_00000.nxs``... into DIR
#: (created if needed), each opened, written and closed as an acquisition does, with the
#: title ``scan I``.
NEXUS_WRITER = """
import os, sys, h5py, numpy
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
for i in range(n):
    with h5py.File(os.path.join(d, "scan_%05d.nxs" % i), "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["title"] = "scan %d" % i
        entry["start_time"] = "2024-01-01T10:00:00Z"
        entry.create_dataset("data", data=numpy.arange(256))
"""

#: Plain files written into an existing directory (its watch already in place).
PLAIN_WRITER = """
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
for i in range(n):
    fd = os.open(os.path.join(d, "f%06d.dat" % i), flags, 0o640)
    os.write(fd, b"x" * 64)
    os.close(fd)
"""


def nexus_paths(directory: Path, n: int) -> list[str]:
    return [str(directory / f"scan_{i:05d}.nxs") for i in range(n)]


def documents(db: Path) -> dict[str, FileDocument]:
    with open_store(f"sqlite:///{db}") as store:
        return {doc.path: doc for doc in store.iter_documents()}


def count(db: Path) -> int:
    with open_store(f"sqlite:///{db}") as store:
        return store.count()


def wait_for_all(db: Path, paths: list[str], what: str, timeout: float) -> float:
    wanted = set(paths)

    def there() -> bool:
        with open_store(f"sqlite:///{db}") as store:
            return wanted <= {fp.path for fp in store.fingerprints()}

    return wait_for(there, what, timeout)


def wrong_titles(docs: dict[str, FileDocument], paths: list[str]) -> list[str]:
    """Paths whose document is not the complete file's (title ``scan I``, final size)."""
    bad = []
    for i, path in enumerate(paths):
        doc = docs.get(path)
        if doc is None:
            continue
        if doc.title != f"scan {i}" or doc.size != os.stat(path).st_size or doc.error:
            bad.append(path)
    return bad


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path


def test_kill_9_during_a_burst_of_1000_files(tree: Path, reliability: Recorder) -> None:
    n = 1000
    target = tree.joinpath("data", *VISIT)
    paths = nexus_paths(target, n)
    first = DaemonProcess(tree)
    writer = subprocess.Popen([sys.executable, "-c", NEXUS_WRITER, str(target), str(n)])
    try:
        wait_for(lambda: first.status().get("stored", 0) >= 200, "200 files stored", 120)
        readers = descendants(first.pid)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        killed_at = time.monotonic()
    finally:
        first.kill()
        assert writer.wait(180) == 0
    # The indexer processes of a killed daemon do not linger.
    wait_for(lambda: not any(alive(p) for p in readers), "the killed daemon's readers to exit", 30)
    before = documents(tree / "catalog.db")
    assert len(before) < n, "the kill came after the burst was indexed: nothing was tested"
    second = DaemonProcess(tree)
    try:
        wait_for_all(tree / "catalog.db", paths, f"{n} documents after the restart", 180)
        recovered_s = time.monotonic() - killed_at
        wait_for(second.idle, "the daemon to be idle")
    finally:
        assert second.terminate() == 0
    extracted = int(second.last_status()["extracted"])
    after = documents(tree / "catalog.db")
    stored_again = [p for p, doc in before.items() if after[p].indexed_at != doc.indexed_at]
    expected_reads = n - len(before)
    reliability.record(
        Outcome(
            group="fault",
            name="kill -9 during a burst, then restart",
            load=f"{n:,} NeXus files written as a burst",
            fault=f"SIGKILL after {len(before)} files were stored",
            expected=n,
            indexed=len(set(paths) & set(after)),
            duplicated=len(stored_again) + max(0, extracted - expected_reads),
            lost=len(set(paths) - set(after)),
            recover_s=round(recovered_s, 1),
            details={"stored_before_kill": len(before), "extracted_after_restart": extracted},
        )
    )
    assert sorted(after) == paths  # every file, one document each
    assert wrong_titles(after, paths) == []
    assert stored_again == []  # nothing stored before the kill was stored again
    assert extracted == expected_reads  # each file not yet stored was read once


@pytest.mark.slow
def test_inotify_overflow_during_a_burst_of_100000_files(tree: Path, reliability: Recorder) -> None:
    n = 100_000
    burst = tree / "data" / "burst"
    daemon = DaemonProcess(tree, env={"CATALOGD_DAEMON_SOURCE": "inotify"})
    try:
        burst.mkdir()
        wait_for(lambda: daemon.status().get("events", 0) >= 1, "the mkdir event")
        wait_for(daemon.idle, "the new directory to be watched")
        assert daemon.status()["source"] == "inotify"
        # A stalled consumer: the kernel queue (fs.inotify.max_queued_events) fills.
        daemon.proc.send_signal(signal.SIGSTOP)
        try:
            subprocess.run(
                [sys.executable, "-c", PLAIN_WRITER, str(burst), str(n)], check=True, timeout=240
            )
        finally:
            daemon.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        paths = [str(burst / f"f{i:06d}.dat") for i in range(n)]
        wait_for(lambda: count(tree / "catalog.db") >= n, f"{n} documents", 240)
        recovered_s = time.monotonic() - resumed
        wait_for(daemon.idle, "the daemon to be idle")
        status = daemon.status()
    finally:
        assert daemon.terminate() == 0
    after = documents(tree / "catalog.db")
    max_queued = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    reliability.record(
        Outcome(
            group="fault",
            name="inotify queue overflow during a burst",
            load=f"{n:,} files written while the daemon was stalled",
            fault=f"IN_Q_OVERFLOW (kernel queue of {max_queued:,} events overflowed)",
            expected=n,
            indexed=len(set(paths) & set(after)),
            duplicated=0,  # one document per path: the store is keyed by path
            lost=len(set(paths) - set(after)),
            recover_s=round(recovered_s, 1),
            details={
                "overflows": status["overflows"],
                "rescan_files": status["last_reconcile"].get("files"),
                "rescan_s": status["last_reconcile"].get("elapsed_s"),
            },
        )
    )
    assert "IN_Q_OVERFLOW" in daemon.output()
    assert status["overflows"] >= 1
    assert sorted(p for p in after if p.startswith(str(burst))) == paths


def test_sigterm_during_heavy_indexing(tree: Path, reliability: Recorder) -> None:
    n = 1500
    stop_timeout_s = 5.0
    target = tree.joinpath("data", *VISIT)
    paths = nexus_paths(target, n)
    env = {"CATALOGD_DAEMON_STOP_TIMEOUT_S": str(stop_timeout_s)}
    daemon = DaemonProcess(tree, env=env)
    writer = subprocess.Popen([sys.executable, "-c", NEXUS_WRITER, str(target), str(n)])
    try:
        wait_for(lambda: daemon.status().get("stored", 0) >= 150, "150 files stored", 120)
        busy = daemon.status()
        signalled = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(stop_timeout_s + 30)
        stop_s = time.monotonic() - signalled
    finally:
        daemon.kill()
        assert writer.wait(180) == 0
    final = daemon.last_status()
    integrity = sqlite_integrity(tree / "catalog.db")
    at_stop = documents(tree / "catalog.db")
    half_written = wrong_titles(at_stop, paths)
    # What was not finished is found at the next start.
    again = DaemonProcess(tree, env=env)
    try:
        recover_s = wait_for_all(tree / "catalog.db", paths, f"{n} documents", 180)
    finally:
        assert again.terminate() == 0
    after = documents(tree / "catalog.db")
    reliability.record(
        Outcome(
            group="fault",
            name="SIGTERM during heavy indexing",
            load=f"{n:,} NeXus files written while indexing",
            fault=f"SIGTERM with {busy.get('pending', 0)} pending, "
            f"{busy.get('in_flight', 0)} being read",
            expected=n,
            indexed=len(set(paths) & set(after)),
            duplicated=len([p for p, d in at_stop.items() if after[p].indexed_at != d.indexed_at]),
            lost=len(set(paths) - set(after)),
            recover_s=round(recover_s, 1),
            details={
                "stop_s": round(stop_s, 2),
                "stop_timeout_s": stop_timeout_s,
                "exit_status": code,
                "integrity_check": integrity,
                "half_written_documents": len(half_written),
                "stored_at_stop": len(at_stop),
            },
        )
    )
    assert code == 0
    # The bound, plus the interpreter's own start-to-exit overhead.
    assert stop_s < stop_timeout_s + 3.0, f"stopped after {stop_s:.1f} s"
    assert final["stopped_cleanly"] is True
    assert integrity == "ok"
    assert half_written == []
    assert sorted(after) == paths
    assert wrong_titles(after, paths) == []


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny", "256k") as mount:
        yield mount


def test_a_full_spool_disk_stops_the_daemon_with_a_status_systemd_restarts(
    tiny_disk: Path,
) -> None:
    from catalogd.store.spool import Spool

    unit = (Path(__file__).resolve().parent.parent / "systemd" / "catalogd.service").read_text()
    prevented = {
        int(code)
        for line in unit.splitlines()
        if line.startswith("RestartPreventExitStatus=")
        for code in line.split("=", 1)[1].split()
    }
    spool = Spool(str(tiny_disk / "run.spool.sqlite"), target="http://es.invalid:9200")
    try:
        filler = [big_document(i) for i in range(200)]
        with pytest.raises(CatalogdError) as raised:
            for doc in filler:
                spool.append_puts([doc])
    finally:
        spool.close()
    assert "full" in raised.value.message
    assert raised.value.exit_code not in prevented  # systemd brings it back


def big_document(i: int) -> FileDocument:
    path = f"/data/visitor/id11/p1/20240101/raw/f{i}.nxs"
    return FileDocument(
        id=document_id(path),
        path=path,
        name=os.path.basename(path),
        size=i,
        mtime=1.0,
        ctime=1.0,
        inode=i,
        dev=1,
        uid=0,
        gid=0,
        owner=None,
        group=None,
        mode=0o100640,
        level="inside",
        metadata={"padding": "x" * 8192},
    )
